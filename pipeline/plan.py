"""Graph -> deployment plan: one agent per step and per part (a router's models, an
ensemble's join), their input topics, and the one routing function (:func:`route`) that
decides where every outcome goes, for the mock server and Kafka alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.events import Event
from pipeline.graph import Graph
from steps.base import RESPOND, Emit, Outcome, Step

DEAD_LETTER = None  # the destination of an outcome that goes to the dead-letter topic


@dataclass(frozen=True, eq=False)
class Agent:
    """One stream agent: consumes ``input``, runs ``step``, sends outcomes by route.

    ``name`` names its consumer group; ``node`` is the graph step it belongs to (a
    model's node is its router), which is the part name branch joins see; ``routes``
    maps each route (None: the successors) to its topics; ``replies`` maps join tags to
    the topic that collects the tagged events' answers.
    """

    name: str
    node: str
    step: Step
    input: str
    routes: Mapping[str | None, tuple[str, ...]]
    replies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Plan:
    """Every agent of a graph, and the graph's source, sink and dead-letter topics.

    ``id_keyed_topics`` are keyed by the event's identity, so all records of an event meet
    in one partition (the inputs of joins and duplicate filters).
    """

    graph: Graph
    agents: tuple[Agent, ...]
    id_keyed_topics: frozenset[str] = frozenset()
    source: str = ""
    sink: str = ""
    dlq: str = ""

    def agent(self, name: str) -> Agent:
        """The agent called ``name``."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(f"no agent {name!r}; agents: {', '.join(a.name for a in self.agents)}")

    def topics(self) -> list[str]:
        """Every topic the deployment uses, source first."""
        names = [self.source] + [a.input for a in self.agents] + [self.sink, self.dlq]
        return list(dict.fromkeys(names))


def route(agent: Agent, outcome: Outcome) -> list[tuple[str | None, Event]]:
    """Where ``outcome`` of ``agent`` goes: ``(topic, event)`` pairs, the topic
    :data:`DEAD_LETTER` for a failure nobody waits for. An event tagged for a join answers
    (or fails) to the join; the event is marked with the part it is."""
    event = outcome.event
    tag = event.meta.get("join")
    if isinstance(outcome, Emit):
        if tag is not None and outcome.route is None:
            event.meta["part"] = agent.name
            return [(agent.replies[tag], event)]
        event.meta["part"] = agent.node
        targets = agent.routes[outcome.route]
        if len(targets) == 1:
            return [(targets[0], event)]
        return [(topic, event) for topic in targets]
    if tag is not None:
        event.meta["part"] = agent.name
        event.meta["failed"] = f"{outcome.error.error_type}: {outcome.error.message}"
        return [(agent.replies[tag], event)]
    return [(DEAD_LETTER, event)]


def agent_name(step_name: str) -> str:
    """The agent (its consumer group and topic suffix) of a step or model: ``m:v2`` runs as ``m.v2``."""
    return step_name.replace(":", ".")


def build_plan(graph: Graph, *, fuse: bool = False) -> Plan:
    """The agents that deploy ``graph`` (validated first); with ``fuse``, each cheap stateless
    step runs inside the agents that feed it (:mod:`pipeline.fusion`).

    A step's outputs go to its successors, the output topic when it has none; a responder's
    (:meth:`pipeline.graph.StepNode.respond`) go to the output topic too, and then the last
    steps after it send nowhere. Every agent's :data:`steps.base.RESPOND` route is the output topic.
    """
    graph.validate()
    topic = {name: f"{graph.name}.{agent_name(name)}" for name in graph.steps}
    after_responder = _after_responders(graph)
    replies: dict[str, str] = {}
    agents: list[Agent] = []

    def downstream(name: str) -> tuple[str, ...]:
        children = tuple(topic[child] for child in graph.successors(name))
        if graph.steps[name].responder:
            return (*children, graph.sink)
        if children or name in after_responder:
            return children
        return (graph.sink,)

    def add(name: str, node: str, step: Step, input_topic: str, successors: tuple[str, ...]) -> None:
        routes: dict[str | None, tuple[str, ...]] = {None: successors, RESPOND: (graph.sink,)}
        routes.update({route: (f"{graph.name}.{agent_name(part)}",) for route, part in step.routes().items()})
        replies.update({tag: f"{graph.name}.{agent_name(part)}" for tag, part in step.replies().items()})
        agents.append(Agent(agent_name(name), node, step, input_topic, routes, replies))
        for part in step.parts():
            add(part.name, node, part, f"{graph.name}.{agent_name(part.name)}", successors)

    for name, node in graph.steps.items():
        add(name, name, node.step, topic[name] if node.after else graph.source, downstream(name))
    id_keyed = frozenset(agent.input for agent in agents if agent.step.keyed_by_id)
    plan = Plan(graph, tuple(agents), id_keyed, graph.source, graph.sink, graph.dlq)
    if fuse:
        from pipeline.fusion import fused

        return fused(plan)
    return plan


def _after_responders(graph: Graph) -> set[str]:
    """The steps that come, directly or not, after a responder."""
    found: set[str] = set()
    frontier = [name for name, node in graph.steps.items() if node.responder]
    while frontier:
        for child in graph.successors(frontier.pop()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found
