"""Graph -> deployment plan: one agent per step, model and ensemble join, with topics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.events import Event
from pipeline.graph import Graph, RouterNode
from steps.base import Step
from steps.ensemble import Ensemble
from steps.join import Join, merge_bodies


@dataclass(frozen=True, eq=False)
class Agent:
    """One stream agent: consumes ``input``, runs ``step``, sends outcomes by route.

    ``name`` names its consumer group; ``node`` is the graph step it belongs to
    (a model's node is its router), which is the part name joins see.
    """

    name: str
    node: str
    step: Step
    input: str
    routes: Mapping[str | None, tuple[str, ...]]
    replies: Mapping[str, str] = field(default_factory=dict)

    def targets(self, event: Event, route: str | None) -> tuple[str, ...]:
        """The topics an emitted ``event`` goes to; marks which part of a join it is."""
        tag = event.meta.get("join")
        if tag is not None and route is None:
            event.meta["part"] = self.name
            return (self.replies[tag],)
        event.meta["part"] = self.node
        return self.routes[route]

    def reply_topic(self, event: Event) -> str | None:
        """Where a failure of ``event`` is reported instead of the dead-letter topic."""
        tag = event.meta.get("join")
        if tag is None:
            return None
        event.meta["part"] = self.name
        return self.replies[tag]


@dataclass(frozen=True, eq=False)
class Plan:
    """Every agent of a graph, and the graph's source, sink and dead-letter topics.

    ``id_keyed_topics`` are keyed by event id, so all records of an event meet in one
    partition (the inputs of joins and duplicate filters).
    """

    graph: Graph
    agents: tuple[Agent, ...]
    id_keyed_topics: frozenset[str] = frozenset()

    @property
    def source(self) -> str:
        return self.graph.source

    @property
    def sink(self) -> str:
        return self.graph.sink

    @property
    def dlq(self) -> str:
        return self.graph.dlq

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


def build_plan(graph: Graph) -> Plan:
    """The agents that deploy ``graph`` (validated first)."""
    graph.validate()
    topic = {name: f"{graph.name}.{name}" for name in graph.steps}

    def input_of(name: str) -> str:
        return topic[name] if graph.steps[name].after else graph.source

    def downstream(name: str) -> tuple[str, ...]:
        return tuple(input_of(child) for child in graph.successors(name)) or (graph.sink,)

    replies: dict[str, str] = {}
    agents: list[Agent] = []
    for name, node in graph.steps.items():
        if node.kind == "join":
            join = Join(
                node.after,
                **{k: v for k, v in node.options.items() if k != "merge"},
                merge=_join_merge(node.options.get("merge")),
            )
            join.name = name
            agents.append(Agent(name, name, join, input_of(name), {None: downstream(name)}, replies))
            continue
        assert node.step is not None
        if not isinstance(node, RouterNode):
            agents.append(Agent(name, name, node.step, input_of(name), {None: downstream(name)}, replies))
            continue
        routes = {key: (f"{graph.name}.{key}",) for key in node.models}
        agents.append(Agent(name, name, node.step, input_of(name), routes, replies))
        for key, (model, _, _) in node.models.items():
            model_topic = f"{graph.name}.{key}"
            if isinstance(model, Ensemble):
                join_topic = replies[key] = f"{graph.name}.{key}.join"
                fan_out = {member: (f"{graph.name}.{member}",) for member in model.members}
                agents.append(Agent(key, name, model, model_topic, fan_out, replies))
                agents.append(Agent(f"{key}.join", name, model.joiner(), join_topic, {None: downstream(name)}, replies))
            else:
                agents.append(Agent(key, name, model, model_topic, {None: downstream(name)}, replies))
    id_keyed = frozenset(agent.input for agent in agents if agent.step.keyed_by_id)
    return Plan(graph, tuple(agents), id_keyed)


def _join_merge(merge: Any) -> Any:
    """A user merge takes ``{part: body}``; the Join step's merge also gets the event."""
    if merge is None:
        return merge_bodies
    return lambda event, parts: merge(parts)
