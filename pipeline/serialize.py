"""A graph as plain data and back (YAML-safe), through a registry of node kinds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.errors import GraphError
from pipeline.importing import describe, from_data, rebuild, to_data

if TYPE_CHECKING:
    from pipeline.graph import Graph, StepNode


def _task_to(node: StepNode, entry: dict[str, Any]) -> None:
    entry["handler"] = describe(node.handler, node.options)


def _task_from(graph: Graph, entry: dict[str, Any], after: list[str]) -> None:
    handler, kwargs = rebuild(entry["handler"])
    graph.add_step(entry["name"], handler, after=after, **kwargs)


def _router_to(node: StepNode, entry: dict[str, Any]) -> None:
    entry["options"] = to_data(node.options)
    entry["models"] = [
        {"key": key, "handler": describe(handler, kwargs)} for key, (_, handler, kwargs) in node.models.items()
    ]


def _router_from(graph: Graph, entry: dict[str, Any], after: list[str]) -> None:
    router = graph.add_router(entry["name"], after=after, **from_data(entry.get("options", {})))
    for model in entry.get("models", []):
        handler, kwargs = rebuild(model["handler"])
        router.add_model(model["key"], handler, **kwargs)


def _join_to(node: StepNode, entry: dict[str, Any]) -> None:
    entry["options"] = to_data(node.options)


def _join_from(graph: Graph, entry: dict[str, Any], after: list[str]) -> None:
    graph.join(entry["name"], after=after, **from_data(entry.get("options", {})))


KINDS: dict[str, tuple[Callable[[Any, dict[str, Any]], None], Callable[[Any, dict[str, Any], list[str]], None]]] = {
    "task": (_task_to, _task_from),
    "router": (_router_to, _router_from),
    "join": (_join_to, _join_from),
}


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """``graph`` as plain data; classes and functions by import path."""
    steps = []
    for node in graph.steps.values():
        entry: dict[str, Any] = {"name": node.name, "kind": node.kind, "after": list(node.after)}
        KINDS[node.kind][0](node, entry)
        if node.responder:
            entry["respond"] = True
        if node.on_error is not None:
            entry["error_handler"] = to_data(node.on_error)
        steps.append(entry)
    on_error = None if graph.on_error is None else to_data(graph.on_error)
    return {
        "name": graph.name,
        "source": graph.source,
        "sink": graph.sink,
        "guarantee": graph.guarantee,
        "parameters": to_data(graph.context.parameters),
        "errors": {"topic": graph.errors, "handler": on_error},
        "steps": steps,
    }


def graph_from_dict(data: dict[str, Any]) -> Graph:
    """The graph :func:`graph_to_dict` described."""
    from pipeline.graph import Graph

    graph = Graph(
        data["name"],
        source=data.get("source"),
        sink=data.get("sink"),
        guarantee=data.get("guarantee", "at_least_once"),
        parameters=from_data(data.get("parameters") or {}),
    )
    errors = data.get("errors") or {}
    graph.error_handler(errors.get("topic", "dlq"), from_data(errors.get("handler")))
    for entry in data.get("steps", []):
        kind = entry.get("kind", "task")
        if kind not in KINDS:
            raise GraphError(f"step {entry.get('name')!r} has unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        KINDS[kind][1](graph, entry, entry.get("after", []))
        node = graph[entry["name"]]
        if entry.get("respond"):
            node.respond()
        if entry.get("error_handler") is not None:
            node.error_handler(from_data(entry["error_handler"]))
    return graph
