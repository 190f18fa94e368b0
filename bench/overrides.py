"""AgentSettings overrides written as ``name=value[,name=value...]``: parsed, checked, labelled.

Values take the type of the field's default (an int field gets an int); ``none`` is None. Any field
of the checkout's ``AgentSettings`` may be named, so settings added later need no change here.
No streamserve import at module level: the worker of another checkout imports this file too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Overrides = dict[str, Any]


def split(text: str | None) -> dict[str, str]:
    """``"linger_ms=5,fetch_max_wait_ms=10"`` -> ``{"linger_ms": "5", ...}``; "" or "default" -> {}."""
    pairs: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part or part == "default":
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"setting {part!r} is not name=value")
        pairs[name.strip()] = value.strip()
    return pairs


def coerce(settings_class: type, pairs: dict[str, str]) -> Overrides:
    """``pairs`` as typed values for ``settings_class`` (a dataclass); ValueError naming a field that
    does not exist or a value of the wrong type."""
    fields = {field.name for field in dataclasses.fields(settings_class)}
    defaults = settings_class()
    typed: Overrides = {}
    for name, raw in pairs.items():
        if name not in fields:
            raise ValueError(f"{settings_class.__name__} has no field {name!r}; fields: {', '.join(sorted(fields))}")
        current = getattr(defaults, name)
        typed[name] = _value(name, raw, current)
    return typed


def _value(name: str, raw: str, current: Any) -> Any:
    if raw.lower() in ("none", "null"):
        return None
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if current is None:  # an optional field: the most specific type that parses
            for kind in (int, float):
                try:
                    return kind(raw)
                except ValueError:
                    continue
        return raw
    except ValueError:
        raise ValueError(f"setting {name}={raw!r}: expected {type(current).__name__}") from None


def label(pairs: dict[str, Any]) -> str:
    """``"linger_ms=5, fetch_max_wait_ms=10"``, or ``"defaults"``."""
    return ", ".join(f"{name}={value}" for name, value in pairs.items()) or "defaults"


def agent_settings_class() -> type:
    """The checkout's ``AgentSettings`` (``pipeline.runtime.settings``, or ``pipeline.agent`` in
    checkouts from before the runtime was split out)."""
    try:
        from pipeline.runtime.settings import AgentSettings
    except ImportError:
        from pipeline.agent import AgentSettings  # type: ignore[no-redef]
    return AgentSettings


def check(text: str | None) -> Overrides:
    """The overrides in ``text``, checked against this checkout's AgentSettings (for early errors)."""
    return coerce(agent_settings_class(), split(text))
