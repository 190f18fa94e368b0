"""Classes and functions by import path (``module:qualname``), and plain-data state."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pipeline.errors import GraphError

_PLAIN = (str, int, float, bool, type(None))
REF = "$ref"


def import_path(obj: Any) -> str:
    """``module:qualname`` of a module-level class or function."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module is None or qualname is None or "<" in qualname:
        raise GraphError(
            f"{obj!r} cannot be referenced by import path; define it at module level (not a lambda or a local function)"
        )
    return f"{module}:{qualname}"  # "__main__:Name" works in this process only (a notebook, a script)


def import_object(path: str) -> Any:
    """The object named by a built-in model server's short name (``"xgboost"``, ``"onnx"``, ...),
    else by ``module:qualname`` (or MLRun's ``module.name``, e.g. ``json.dumps``)."""
    from steps.registry import BUILTIN_MODELS

    builtin = BUILTIN_MODELS.get(path)
    if builtin is not None:
        path = builtin.path
    module_name, _, qualname = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not qualname:
        raise GraphError(
            f"import path {path!r} must look like 'package.module:Name' or 'package.module.name', "
            f"or name a built-in model server: {', '.join(BUILTIN_MODELS)}"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        if module_name == "__main__":
            raise GraphError(
                f"cannot find {qualname!r}: it was defined in a notebook or script (__main__), which "
                "this process is not; move it to a module that worker processes can import"
            ) from exc
        raise GraphError(f"cannot import {path!r}: {exc}") from exc
    return target


def to_data(value: Any) -> Any:
    """``value`` as YAML-safe data; classes and functions become ``{"$ref": path}``."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [to_data(item) for item in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: to_data(v) for k, v in value.items()}
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
        return {REF: import_path(value)}
    raise GraphError(f"{value!r:.80} is not plain data (str, number, list, dict) or an importable name")


def from_data(value: Any) -> Any:
    """The inverse of :func:`to_data`."""
    if isinstance(value, list):
        return [from_data(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {REF}:
            return import_object(value[REF])
        return {k: from_data(v) for k, v in value.items()}
    return value


def describe(handler: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """How to rebuild ``handler`` (a class with kwargs, a function, or an object)."""
    if inspect.isclass(handler):
        return {"class": import_path(handler), "kwargs": to_data(kwargs)}
    if inspect.isfunction(handler) or inspect.isbuiltin(handler):
        return {"function": import_path(handler), "kwargs": to_data(kwargs)}
    if isinstance(handler, str):
        return {"class": handler, "kwargs": to_data(kwargs)}
    state = getattr(handler, "__dict__", None)
    if state is None:
        raise GraphError(f"{handler!r:.80} has no attributes to save; pass its class and kwargs instead")
    public = {name: value for name, value in state.items() if not name.startswith("_")}
    return {"object": import_path(type(handler)), "state": to_data(public)}


def rebuild(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The handler and kwargs that :func:`describe` described."""
    if "object" in spec:
        cls = import_object(spec["object"])
        state = from_data(spec["state"])
        arguments = {k: v for k, v in state.items() if k != "name"}
        try:
            obj = cls(**arguments)  # the usual case: public attributes are the constructor's arguments
        except TypeError:
            obj = cls.__new__(cls)
        obj.__dict__.update(state)
        return obj, {}
    target = spec.get("class") or spec.get("function")
    if target is None:
        raise GraphError(f"handler spec {spec!r} names no class, function or object")
    return import_object(target), from_data(spec.get("kwargs") or {})
