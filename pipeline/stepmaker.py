"""What a user adds to a graph, as a step: a Step object or class, a class with ``do(body)``, a
callable, or an import path; with MLRun's ``name`` and ``context`` given to those that take them."""

from __future__ import annotations

import inspect
from typing import Any

from pipeline.errors import GraphError
from pipeline.importing import import_object
from steps.base import Step, TaskStep


def as_step(handler: Any, *, name: str | None = None, context: Any = None, **kwargs: Any) -> Step:
    """A :class:`Step` from a step object or class, a class with ``do(body)``, a callable, or
    any of those named by import path (``"json.dumps"``, ``"mypkg.steps:Clean"``).

    A class gets ``name`` and ``context`` when its constructor takes them (by name or
    ``**kwargs``), as MLRun passes them; a function gets ``context`` when it has a parameter
    of that name. ``input_path``/``result_path`` pick and place a task's body part (dotted)."""
    if isinstance(handler, str):
        handler = import_object(handler)
    task = {key: kwargs.pop(key) for key in ("full_event", "input_path", "result_path") if key in kwargs}
    if inspect.isclass(handler):
        if issubclass(handler, Step):
            kwargs, task = {**kwargs, **task}, {}
        try:
            handler = handler(**_injected(handler, name=name, context=context), **kwargs)
        except TypeError as exc:
            raise GraphError(f"cannot create {handler.__qualname__}(**{kwargs}): {exc}") from exc
        kwargs = {}
    if isinstance(handler, Step):
        if task:
            raise GraphError(f"options {sorted(task)} are for task steps, not {type(handler).__name__}")
        return handler
    if kwargs:
        raise GraphError(f"options {sorted(kwargs)} need a class handler, got {handler!r:.60}")
    do = getattr(handler, "do", None)
    function = do if callable(do) else handler
    if not callable(function):
        raise GraphError(f"{handler!r:.60} is not a step: give a Step, a class with do(body), or a callable")
    return TaskStep(function, context=context, **task)


def _injected(cls: type, **candidates: Any) -> dict[str, Any]:
    """Those of ``candidates`` (not None) that ``cls``'s constructor accepts."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {k: v for k, v in candidates.items() if v is not None and (open_ended or k in parameters)}
