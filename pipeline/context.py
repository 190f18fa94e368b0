"""The context a graph gives the classes and handlers that ask for it (MLRun's ``context``)."""

from __future__ import annotations

import logging
from typing import Any


class GraphContext:
    """What a step can read of its graph: its name, its parameters, a logger."""

    def __init__(self, graph_name: str, parameters: dict[str, Any] | None = None) -> None:
        self.name = graph_name
        self.parameters = dict(parameters or {})
        self.logger = logging.getLogger(f"streamserve.graph.{graph_name}")

    def get_param(self, key: str, default: Any = None) -> Any:
        """The graph parameter ``key``, else ``default``."""
        return self.parameters.get(key, default)
