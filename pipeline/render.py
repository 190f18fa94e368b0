"""A graph's deployment plan as text and as a Mermaid flowchart."""

from __future__ import annotations

from pipeline.plan import Plan


def plan_text(plan: Plan) -> str:
    """One line per agent: the topic it reads, its step, where its outputs go."""
    graph = plan.graph
    lines = [f"graph {graph.name} ({graph.guarantee}): {plan.source} -> ... -> {plan.sink}; errors -> {plan.dlq}"]
    for agent in plan.agents:
        kind = type(agent.step).__name__
        routes = "; ".join(f"{route or 'next'} -> {', '.join(topics)}" for route, topics in agent.routes.items())
        lines.append(f"  {agent.name:<14} {kind:<18} reads {agent.input:<22} {routes}")
    return "\n".join(lines)


def plan_mermaid(plan: Plan) -> str:
    """A Mermaid flowchart: topics as edges between agents."""
    ids = {agent.input: [] for agent in plan.agents}
    for agent in plan.agents:
        ids[agent.input].append(_node(agent.name))
    lines = ["flowchart LR", f'  source(["{plan.source}"])', f'  sink(["{plan.sink}"])']
    for agent in plan.agents:
        lines.append(f'  {_node(agent.name)}["{agent.name}<br/><small>{type(agent.step).__name__}</small>"]')
    for entry in ids.get(plan.source, []):
        lines.append(f"  source --> {entry}")
    for agent in plan.agents:
        for route, topics in agent.routes.items():
            label = f"|{route}|" if route else ""
            for topic in topics:
                for target in ids.get(topic, ["sink"] if topic == plan.sink else []):
                    lines.append(f"  {_node(agent.name)} -->{label} {target}")
        for tag in agent.replies:
            if agent.name in _members(plan, tag):
                lines.append(f"  {_node(agent.name)} -.->|join| {_node(tag + '.join')}")
    return "\n".join(lines)


def _members(plan: Plan, ensemble: str) -> list[str]:
    return [route for route in plan.agent(ensemble).routes if route is not None]


def _node(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")
