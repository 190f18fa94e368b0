"""The V2 inference protocol: request paths, model inputs, response bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.errors import ProtocolError, StepError

# What a model serves; a model class's ``op_<name>`` methods add their own operations.
OPERATIONS = ("infer", "predict", "infer_dict", "predict_dict", "explain", "ready", "metadata")
ROUTER_OPERATIONS = ("infer", "predict", "explain")  # /v2/models/<op>: the router's default model
_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<op>[A-Za-z_][A-Za-z0-9_]*))?/?$"
)


@dataclass(frozen=True, slots=True)
class ModelPath:
    """What a V2 path names: a model (optional), a version (optional) and an operation (None
    when the path names none: infer, or the model's metadata for a GET)."""

    model: str | None = None
    version: str | None = None
    operation: str | None = None


_ROOT = ModelPath()


@lru_cache(maxsize=4096)
def parse_path(path: str) -> ModelPath:
    """Parse ``/``, ``/v2/models/<op>`` and ``/v2/models/<m>[/versions/<v>][/<op>]``."""
    if not path or path == "/":
        return _ROOT
    match = _MODEL_PATH.match(path)
    if match is None:
        raise ProtocolError(f"path {path!r} is not a V2 model path; expected /v2/models/<model>[/versions/<v>]/<op>")
    if match["model"] in ROUTER_OPERATIONS and match["version"] is None and match["op"] is None:
        return ModelPath(None, None, match["model"])
    return ModelPath(match["model"], match["version"], match["op"])


def operation(path: str, body: Any) -> str:
    """The operation a request asks for: ``body["operation"]``, else the path's, else infer."""
    if isinstance(body, dict):
        named = body.get("operation")
        if isinstance(named, str) and named:
            return named
    return parse_path(path).operation or "infer"


def request_inputs(request: Any) -> Any:
    """The ``inputs`` of a request, checked as MLRun's V2 servers check them (a list), with a V2
    tensor (``[{"name", "shape", "data"}]``) reshaped to its array."""
    if not isinstance(request, dict) or "inputs" not in request:
        keys = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise StepError(f'Expected key "inputs" in request body (got {keys})')
    inputs = request["inputs"]
    if isinstance(inputs, np.ndarray):
        return inputs
    if not isinstance(inputs, (list, tuple)):
        raise StepError(f'Expected "inputs" to be a list, got {type(inputs).__name__}')
    if inputs and isinstance(inputs[0], dict) and "data" in inputs[0]:
        return _tensor_rows(inputs[0])
    return inputs


def rows(inputs: Any) -> Any:
    """``inputs`` as rows that events of a batch can be stacked by, or None when they are not
    rows (a single flat data point, a scalar, a dict): such a request is predicted alone."""
    if isinstance(inputs, np.ndarray):
        return inputs if inputs.ndim >= 2 and len(inputs) else None
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(row, _ROW) for row in inputs):
        return inputs
    return None


_ROW = (list, tuple, np.ndarray)


def _tensor_rows(tensor: dict) -> np.ndarray:
    try:
        data = np.asarray(tensor["data"])
        shape = tensor.get("shape") or [len(data)]
        return data.reshape(shape)
    except (ValueError, TypeError) as exc:
        raise StepError(f"V2 tensor {tensor.get('name', '?')!r} has a bad shape or data: {exc}") from exc


def now() -> str:
    """The current time as a response timestamp (ISO 8601, UTC)."""
    return datetime.now(timezone.utc).isoformat()


def response(
    event_id: str,
    model_name: str,
    outputs: Any,
    *,
    model_version: str | None = None,
    timestamp: str | None = None,
    stamped: bool = True,
) -> dict[str, Any]:
    """A V2 response body, in MLRun's key order; ``timestamp`` defaults to now (none at all
    when not ``stamped``: explanations and ensemble votes)."""
    body: dict[str, Any] = {"id": event_id, "model_name": model_name, "outputs": outputs}
    if stamped:
        body["timestamp"] = timestamp or now()
    if model_version:
        body["model_version"] = model_version
    return body


def get_in(body: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``body`` (None where a key is missing), as MLRun's
    ``input_path``."""
    if not isinstance(body, dict):
        raise StepError(f"input_path {path!r} needs a dict body, got {type(body).__name__}")
    value: Any = body
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def set_in(body: Any, path: str, value: Any) -> Any:
    """``body`` with ``value`` at dotted ``path`` (intermediate dicts made), as MLRun's
    ``result_path``; a body that is not a dict (or empty) is replaced by ``value``."""
    if not body:
        return value
    if not isinstance(body, dict):
        raise StepError(f"result_path {path!r} needs a dict body, got {type(body).__name__}")
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise StepError(f"result_path {path!r}: {key!r} holds {type(target).__name__}, not a dict")
    target[last] = value
    return body
