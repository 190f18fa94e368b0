"""The event that flows between steps, and the record of a failed one."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any


def new_event_id() -> str:
    """A fresh event id: 128 random bits as 32 hex digits (a uuid4's entropy, cheaper)."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class Event:
    """One request travelling through a graph.

    ``body`` is what steps read and return; ``path`` is the V2 path the request
    entered with (it names the model and the operation); ``key`` is the Kafka key
    (entity ordering); ``headers`` are correlation headers passed through to the
    response; ``meta`` is runtime bookkeeping (join tags, origin time, format).
    """

    body: Any
    id: str = field(default_factory=new_event_id)
    path: str = "/"
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def derive(self, body: Any) -> Event:
        """The same event (id, path, key, headers, meta) carrying a new body."""
        return Event(body, self.id, self.path, self.key, self.headers, dict(self.meta))

    def copy(self) -> Event:
        """An independent copy for another branch: its own meta and (for a dict) its own body."""
        return self.derive(dict(self.body) if isinstance(self.body, dict) else self.body)


@dataclass(slots=True, frozen=True)
class ErrorRecord:
    """Why a step rejected an event: what the error handler and dead-letter topic get."""

    event_id: str
    step: str
    error_type: str
    message: str
    timestamp: float = field(default_factory=time.time)

    @classmethod
    def from_exception(cls, event_id: str, step: str, exc: BaseException) -> ErrorRecord:
        """Describe ``exc`` raised by ``step`` while processing ``event_id``."""
        return cls(event_id, step, type(exc).__name__, str(exc) or repr(exc))

    def to_dict(self) -> dict[str, Any]:
        """The record as the mock server returns it."""
        return {
            "id": self.event_id,
            "error": self.message,
            "error_type": self.error_type,
            "step": self.step,
            "timestamp": self.timestamp,
        }
