"""streamserve: real-time ML serving graphs over Kafka.

Names are imported on first use, so ``steps`` (which uses ``pipeline.events``)
and ``pipeline.graph`` (which uses ``steps``) can import each other's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.errors import (
    BrokerError,
    CodecError,
    DeploymentError,
    GraphError,
    ProtocolError,
    RequestFailed,
    RoutingError,
    StepError,
    StreamServeError,
)
from pipeline.events import ErrorRecord, Event

if TYPE_CHECKING:
    from pipeline.deploy import Deployment
    from pipeline.graph import Graph, RouterNode, StepNode
    from pipeline.mock import MockServer
    from pipeline.plan import Agent, Plan, build_plan

_LAZY = {
    "Graph": "pipeline.graph",
    "RouterNode": "pipeline.graph",
    "StepNode": "pipeline.graph",
    "MockServer": "pipeline.mock",
    "Deployment": "pipeline.deploy",
    "Agent": "pipeline.plan",
    "Plan": "pipeline.plan",
    "build_plan": "pipeline.plan",
}

__all__ = [
    "Agent",
    "BrokerError",
    "CodecError",
    "Deployment",
    "DeploymentError",
    "ErrorRecord",
    "Event",
    "Graph",
    "GraphError",
    "MockServer",
    "Plan",
    "ProtocolError",
    "RequestFailed",
    "RouterNode",
    "RoutingError",
    "StepError",
    "StepNode",
    "StreamServeError",
    "build_plan",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
