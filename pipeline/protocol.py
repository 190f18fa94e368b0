"""The V2 inference protocol: request paths, model inputs, response bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.errors import ProtocolError, StepError

OPERATIONS = ("infer", "predict", "explain", "ready")
_MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<op>[a-z_]+))?/?$")


@dataclass(frozen=True, slots=True)
class ModelPath:
    """What a V2 path names: a model (optional), a version (optional) and an operation."""

    model: str | None = None
    version: str | None = None
    operation: str = "infer"


_ROOT = ModelPath()


@lru_cache(maxsize=4096)
def parse_path(path: str) -> ModelPath:
    """Parse ``/``, ``/v2/models/{m}[/versions/{v}][/{op}]`` into a :class:`ModelPath`."""
    if not path or path == "/":
        return _ROOT
    match = _MODEL_PATH.match(path)
    if match is None:
        raise ProtocolError(f"path {path!r} is not a V2 model path; expected /v2/models/<model>[/versions/<v>]/<op>")
    operation = match["op"] or "infer"
    if operation not in OPERATIONS:
        raise ProtocolError(f"path {path!r}: unknown operation {operation!r}; one of {OPERATIONS}")
    return ModelPath(match["model"], match["version"], operation)


def model_inputs(body: Any) -> list | np.ndarray:
    """The rows of a request body: ``inputs`` as rows, or the first V2 tensor reshaped."""
    if not isinstance(body, dict):
        raise StepError(f"request body must be a mapping with 'inputs', got {type(body).__name__}")
    if "inputs" not in body:
        raise StepError(f"request has no 'inputs' (keys: {sorted(body)})")
    inputs = body["inputs"]
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 0 or len(inputs) == 0:
            raise StepError("'inputs' is empty")
        return inputs
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise StepError(f"'inputs' must be a non-empty list of rows, got {inputs!r:.80}")
    first = inputs[0]
    if isinstance(first, dict) and "data" in first:
        return _tensor_rows(first)
    if isinstance(first, (list, tuple, np.ndarray)):
        width = len(first)
        for number, row in enumerate(inputs):
            if not isinstance(row, (list, tuple, np.ndarray)) or len(row) != width:
                raise StepError(f"ragged 'inputs': row 0 has {width} values, row {number} {row!r:.60}")
    return inputs


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
    event_id: str, model_name: str, outputs: Any, *, model_version: str | None = None, timestamp: str | None = None
) -> dict[str, Any]:
    """A V2 response body (``timestamp`` defaults to now)."""
    body: dict[str, Any] = {"id": event_id, "model_name": model_name, "outputs": outputs}
    if model_version is not None:
        body["model_version"] = model_version
    body["timestamp"] = timestamp or now()
    return body
