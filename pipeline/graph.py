"""The serving graph: steps, routers and joins, their edges, validation, YAML form."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from pipeline.context import GraphContext
from pipeline.errors import GraphError
from pipeline.importing import import_object
from pipeline.stepmaker import as_step
from steps.base import Step
from steps.join import Join, merge_bodies
from steps.router import ModelRouter

if TYPE_CHECKING:
    from pipeline.deploy import Deployment
    from pipeline.mock import MockServer

Guarantee = Literal["at_least_once", "exactly_once"]
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


@dataclass(eq=False)
class StepNode:
    """A step of the graph; ``to``/``to_router`` add the next step and return it."""

    graph: Graph
    name: str
    kind: Literal["task", "router", "join"]
    step: Step
    after: list[str]
    handler: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    responder: bool = False
    on_error: Any = None

    def to(self, name: str, handler: Any, *, before: str | None = None, **kwargs: Any) -> StepNode:
        """Add a step after this one (call again on the same node to branch); with ``before``,
        the new step goes between this one and ``before``."""
        return self.graph.add_step(name, handler, after=[self.name], before=before, **kwargs)

    def to_router(self, name: str, *, default: str | None = None, router: Any = None, **kwargs: Any) -> RouterNode:
        """Add a model router after this step (``router``: a ModelRouter subclass or object)."""
        return self.graph.add_router(name, after=[self.name], default=default, router=router, **kwargs)

    def respond(self) -> StepNode:
        """This step's output is the answer: it goes to the output topic, and what the steps
        after it produce does not (they still run: side effects such as monitoring)."""
        self.responder = True
        return self

    def error_handler(self, handler: Any) -> StepNode:
        """When this step fails an event, ``handler(body[, error])`` answers it instead (its
        result goes straight to the output topic); a handler that raises dead-letters it."""
        self.step.error_handler = import_object(handler) if isinstance(handler, str) else handler
        self.on_error = handler
        return self


@dataclass(eq=False)
class RouterNode(StepNode):
    """A router step; :meth:`add_model` registers a model (or ensemble) under a key."""

    models: dict[str, tuple[Step, Any, dict[str, Any]]] = field(default_factory=dict)

    @property
    def router(self) -> ModelRouter:
        assert isinstance(self.step, ModelRouter)
        return self.step

    def add_model(self, key: str, model: Any, **kwargs: Any) -> RouterNode:
        """Serve ``model`` (a ModelServer/Ensemble class with kwargs, an instance, or an import
        path) as ``key``; ``name:version`` keys (``m:v2``) serve several versions of ``m``."""
        self.graph._claim(key, versioned=True)
        step = as_step(model, name=key, context=self.graph.context, **kwargs)
        step.name = key
        self.models[key] = (step, model, kwargs)
        self.router.models[key] = step
        return self


class Graph:
    """A serving graph: events enter at ``source``, flow through steps, leave at ``sink``.

    Errors go to the ``<name>.<errors>`` dead-letter topic (see :meth:`error_handler`).
    ``guarantee`` is the Kafka delivery guarantee of every agent.
    """

    def __init__(
        self,
        name: str,
        *,
        source: str | None = None,
        sink: str | None = None,
        guarantee: Guarantee = "at_least_once",
        parameters: dict[str, Any] | None = None,
    ) -> None:
        _check_name("graph", name)
        if guarantee not in ("at_least_once", "exactly_once"):
            raise GraphError(f"guarantee must be 'at_least_once' or 'exactly_once', not {guarantee!r}")
        self.name = name
        self.source = source or f"{name}.requests"
        self.sink = sink or f"{name}.predictions"
        self.guarantee: Guarantee = guarantee
        self.errors = "dlq"
        self.on_error: Callable[[dict[str, Any]], Any] | None = None
        self.steps: dict[str, StepNode] = {}
        self._names: set[str] = set()
        self.context = GraphContext(name, parameters)

    # -- building ---------------------------------------------------------
    def to(self, name: str, handler: Any, **kwargs: Any) -> StepNode:
        """Add an entry step, fed from the source topic."""
        return self.add_step(name, handler, **kwargs)

    def to_router(self, name: str, *, default: str | None = None, router: Any = None, **kwargs: Any) -> RouterNode:
        """Add a model router as an entry step."""
        return self.add_router(name, default=default, router=router, **kwargs)

    def add_step(
        self, name: str, handler: Any, *, after: Sequence[str] = (), before: str | None = None, **kwargs: Any
    ) -> StepNode:
        """Add a task step (a Step, a class with ``do(body)``, a callable, or an import path)
        after ``after``; with ``before``, inserted between that step and the steps before it."""
        self._claim(name)
        step = as_step(handler, name=name, context=self.context, **kwargs)
        step.name = name
        node = StepNode(self, name, "task", step, list(after), handler, kwargs)
        if before is not None:
            following = self[before]
            node.after = list(after) or list(following.after)
            following.after = [name]
        return self._add(node)

    def add_router(
        self,
        name: str,
        *,
        after: Sequence[str] = (),
        default: str | None = None,
        router: Any = None,
        **kwargs: Any,
    ) -> RouterNode:
        """Add a router after ``after``: a :class:`ModelRouter`, or ``router`` (a subclass, an
        instance, or an import path, with ``kwargs``); add models to the returned node."""
        self._claim(name)
        chosen = ModelRouter if router is None else router
        step = as_step(chosen, name=name, context=self.context, default=default, **kwargs)
        if not isinstance(step, ModelRouter):
            raise GraphError(f"router {name!r}: {chosen!r:.60} is not a ModelRouter (subclass one)")
        step.name = name
        options = {"default": default, "router": router, **kwargs} if router is not None else {"default": default}
        node = RouterNode(self, name, "router", step, list(after), None, options)
        self._add(node)
        return node

    def join(
        self,
        name: str,
        *,
        after: Sequence[str],
        merge: Callable[..., Any] | None = None,
        min_results: int | None = None,
        timeout_ms: int = 5_000,
    ) -> StepNode:
        """Add a step that merges, by event id, what the ``after`` steps produced."""
        self._claim(name)
        options = {"merge": merge, "min_results": min_results, "timeout_ms": timeout_ms}
        join = Join(
            after,
            merge=merge_bodies if merge is None else _parts_merge(merge),
            min_results=min_results,
            timeout_ms=timeout_ms,
        )
        join.name = name
        return self._add(StepNode(self, name, "join", join, list(after), None, options))

    def error_handler(self, name: str = "dlq", handler: Callable[[dict[str, Any]], Any] | None = None) -> Graph:
        """Failed events go to the ``<graph>.<name>`` topic; ``handler`` also sees each error."""
        _check_name("error topic", name)
        self.errors, self.on_error = name, handler
        return self

    def __getitem__(self, name: str) -> StepNode:
        try:
            return self.steps[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no step {name!r}; steps: {', '.join(self.steps)}") from None

    def _claim(self, name: str, *, versioned: bool = False) -> None:
        base, _, version = name.partition(":") if versioned else (name, "", "")
        _check_name("model" if versioned else "step", base)
        if version:
            _check_name("model version", version)
        agent = name.replace(":", ".")  # the agent, its topic and group ("m:v2" runs as "m.v2")
        if name in self._names or agent in self._names:
            raise GraphError(f"graph {self.name!r} already has a step or model named {name!r}")
        self._names.update((name, agent))

    def _add(self, node: StepNode) -> StepNode:
        self.steps[node.name] = node
        return node

    # -- reading ------------------------------------------------------------
    @property
    def dlq(self) -> str:
        """The dead-letter topic."""
        return f"{self.name}.{self.errors}"

    def successors(self, name: str) -> list[str]:
        """The steps that come right after ``name``."""
        return [node.name for node in self.steps.values() if name in node.after]

    def routers(self) -> list[RouterNode]:
        """Every router of the graph."""
        return [node for node in self.steps.values() if isinstance(node, RouterNode)]

    def validate(self) -> Graph:
        """Raise :class:`GraphError` naming the first problem; return the graph if sound."""
        if not self.steps:
            raise GraphError(f"graph {self.name!r} has no steps; add one with graph.to(name, handler)")
        for node in self.steps.values():
            for parent in node.after:
                if parent not in self.steps:
                    raise GraphError(
                        f"step {node.name!r} comes after unknown step {parent!r}; steps: {', '.join(self.steps)}"
                    )
            if node.kind == "join" and len(node.after) < 2:
                raise GraphError(f"join {node.name!r} needs at least two steps in after=, got {node.after}")
        if not any(not node.after for node in self.steps.values()):
            raise GraphError(f"graph {self.name!r} has no entry step (every step comes after another)")
        self._check_cycles()
        for node in self.routers():
            self._check_router(node)
        return self

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 1:
                cycle = [*path[path.index(name) :], name]
                raise GraphError(f"graph {self.name!r} has a cycle: {' -> '.join(cycle)}")
            if state.get(name) == 2:
                return
            state[name] = 1
            for child in self.successors(name):
                visit(child, [*path, name])
            state[name] = 2

        for name in self.steps:
            visit(name, [])

    def _check_router(self, node: RouterNode) -> None:
        if not node.models:
            raise GraphError(f"router {node.name!r} has no models; add one with add_model(key, model)")
        if node.router.default is not None and node.router.default not in node.models:
            raise GraphError(f"router {node.name!r}: default model {node.router.default!r} is not one of its models")
        for key, (step, _, _) in node.models.items():
            for member in step.routes().values():
                member_step = node.models.get(member, (None,))[0]
                if member_step is None:
                    raise GraphError(
                        f"ensemble {key!r} names member {member!r}, which router {node.name!r} does not serve"
                    )
                if member_step.routes():
                    raise GraphError(f"ensemble {key!r}: member {member!r} is itself an ensemble")

    # -- running --------------------------------------------------------------
    def deploy(self, bootstrap: str | None = None, **options: Any) -> Deployment:
        """Run the graph's agents as worker processes on this machine against Kafka at
        ``bootstrap`` (the embedded broker when None, topics created) and return when every agent
        consumes. Options: ``workers`` (step -> process count), ``kafka_config`` (a mapping of
        Kafka client keys, or a properties file), ``topics`` (a topics.yaml), ``fuse`` (run each
        cheap stateless step inside the agents that feed it). Call
        :meth:`pipeline.deploy.Deployment.invoke` on the result; stop it (or use ``with``)."""
        from pipeline.deploy import Deployment

        return Deployment(self, bootstrap, **options)

    def to_mock_server(self, *, strict: bool = False, fuse: bool = False) -> MockServer:
        """The whole graph in-process, through the deployment's delivery loop over memory (no
        broker); ``strict`` encodes every hop as Kafka would; ``fuse`` runs the fused plan."""
        from pipeline.mock import MockServer

        return MockServer(self, strict=strict, fuse=fuse)

    # -- as data ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data; classes and functions by import path."""
        from pipeline.serialize import graph_to_dict

        return graph_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        """Rebuild a graph from :meth:`to_dict`'s data."""
        from pipeline.serialize import graph_from_dict

        return graph_from_dict(data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The graph as YAML; also written to ``path`` if given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> Graph:
        """Rebuild a graph from YAML text or a YAML file."""
        text = str(text_or_path)
        if "\n" not in text and Path(text).is_file():
            text = Path(text).read_text()
        return cls.from_dict(yaml.safe_load(text))


def _parts_merge(merge: Callable[[dict[str, Any]], Any]) -> Callable[[Any, dict[str, Any]], Any]:
    """A user's join merge takes ``{part: body}``; the Join step's merge also gets the event."""
    return lambda event, parts: merge(parts)


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise GraphError(f"{what} name {name!r} must be 1-100 letters, digits, '_' or '-' (it names Kafka topics)")
