"""Find a graph from a ``FILE:OBJ`` or ``module:OBJ`` reference (the CLI's argument)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from pipeline.errors import GraphError
from pipeline.graph import Graph


def load_graph(reference: str) -> Graph:
    """The :class:`Graph` named by ``path/to/file.py:name``, ``package.module:name``, or a
    graph's YAML file (``graph.yaml``, as :meth:`Graph.to_yaml` writes it).

    A file inside packages (folders with ``__init__.py``) is imported under its
    dotted name, so the classes it defines keep stable import paths.
    """
    if reference.endswith((".yaml", ".yml")):
        if not Path(reference).is_file():
            raise GraphError(f"graph file {reference!r} does not exist")
        return Graph.from_yaml(Path(reference))
    target, _, attribute = reference.rpartition(":")
    if not target:
        target, attribute = reference, "graph"
    module_name = _module_name(target)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphError(f"cannot import {target!r} for graph {reference!r}: {exc}") from exc
    graph = getattr(module, attribute, None)
    if callable(graph) and not isinstance(graph, Graph):
        graph = graph()
    if not isinstance(graph, Graph):
        raise GraphError(f"{reference!r} is {type(graph).__name__}, not a pipeline.Graph")
    return graph


def _module_name(target: str) -> str:
    if not target.endswith(".py"):
        return target
    path = Path(target).resolve()
    if not path.is_file():
        raise GraphError(f"graph file {target!r} does not exist")
    parts, root = [path.stem], path.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return ".".join(parts)
