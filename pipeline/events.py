"""The event that flows between steps, the request it came from, and the record of a failure."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Any, TypeAlias

Headers: TypeAlias = "dict[str, bytes | None]"
Position: TypeAlias = "tuple[str, int, int]"  # topic, partition, offset of a record


def new_event_id() -> str:
    """A fresh event id: 128 random bits as 32 hex digits (a uuid4's entropy, cheaper)."""
    return os.urandom(16).hex()


@dataclass(slots=True, frozen=True)
class Origin:
    """The request record exactly as it entered the graph: what a dead letter carries, so it
    can be replayed to the input topic as it is."""

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch

    @property
    def uid(self) -> str:
        """The identity of the request: the same for a redelivery of this record, different
        for a request produced again (even with the same client id)."""
        return f"{self.partition}.{self.offset}.{self.timestamp}"


@dataclass(slots=True)
class Event:
    """One request travelling through a graph.

    ``body`` is what steps read and return; ``id`` is the client's request id, echoed
    in answers (it may repeat: clients retry); ``uid`` is the event's internal identity
    (joins and duplicate filters use it); ``path`` is the V2 path the request entered
    with; ``key`` is the Kafka key (entity ordering); ``headers`` are passed through to
    the answer; ``meta`` is runtime bookkeeping (join tags, format); ``origin`` is the
    request record as it entered the graph.
    """

    body: Any
    id: str = field(default_factory=new_event_id)
    path: str = "/"
    key: bytes | None = None
    headers: dict[str, bytes | None] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    uid: str = field(default_factory=new_event_id)
    origin: Origin | None = None
    src: Position | None = None  # where the agent holding it read it (never sent on)
    wire_origin: bytes | None = None  # ``origin`` as it travels between steps, decoded only when needed

    def derive(self, body: Any) -> Event:
        """The same event (identity, path, key, headers, meta) carrying a new body."""
        return Event(
            body,
            self.id,
            self.path,
            self.key,
            self.headers,
            dict(self.meta),
            self.uid,
            self.origin,
            self.src,
            self.wire_origin,
        )

    def branch(self, body: Any) -> Event:
        """The event for another branch, carrying ``body`` (a copy of its own): its own headers
        and meta too."""
        return Event(
            body,
            self.id,
            self.path,
            self.key,
            dict(self.headers),
            copy.deepcopy(self.meta),
            self.uid,
            self.origin,
            self.src,
            self.wire_origin,
        )


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
