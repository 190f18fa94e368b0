"""Dead letters: the request exactly as it entered the graph (value, key, headers), so it can be
replayed to the input topic as it is, plus headers saying which step failed, why and where."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.codec import origin_of
from pipeline.events import ErrorRecord, Event, Origin
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.transport import Header, Outgoing, Record

logger = logging.getLogger(__name__)

# Headers a dead letter adds; a replayed request keeps ``attempts`` so the next failure counts on.
ERROR_HEADERS = (
    "error",
    "error_type",
    "step",
    "source_topic",
    "partition",
    "offset",
    "attempts",
    "uid",
    "failed_topic",
    "failed_partition",
    "failed_offset",
)
_ERROR_HEADERS = frozenset(ERROR_HEADERS)


class DeadLetters:
    """Builds the dead letters of one agent, and tells the graph's error handler and the sensors."""

    def __init__(
        self,
        topic: str,
        source: str,
        agent: str,
        sensors: Sensors,
        on_error: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.topic, self.source, self.agent, self.sensors, self.on_error = topic, source, agent, sensors, on_error

    def for_record(self, record: Record, exc: Exception) -> Outgoing:
        """A record that could not be decoded: its own bytes, key and headers."""
        error = ErrorRecord.from_exception(_header_id(record.headers), self.agent, exc)
        where = (record.topic, record.partition, record.offset)
        value = record.value if isinstance(record.value, (bytes, bytearray)) else b""
        origin_topic = where if record.topic == self.source else (self.source, -1, -1)
        return self._letter(value, record.key, _pairs(record.headers), origin_topic, where, "", error)

    def for_event(self, event: Event, error: ErrorRecord) -> Outgoing:
        """A failed event: the request it came from, as it entered the graph."""
        where = event.src or ("", -1, -1)
        origin = origin_of(event) or Origin(b"", event.key, tuple(event.headers.items()), -1, -1, 0)
        entered = (self.source, origin.partition, origin.offset)
        return self._letter(origin.value, origin.key, origin.headers, entered, where, event.uid, error)

    def _letter(
        self,
        value: bytes,
        key: bytes | None,
        headers: Any,
        entered: tuple[str, int, int],
        where: tuple[str, int, int],
        uid: str,
        error: ErrorRecord,
    ) -> Outgoing:
        self._notify(error)
        attempts = 1
        kept: list[Header] = []
        for name, header in headers:
            if name == "attempts" and header:
                attempts += _int(header)
            if name not in _ERROR_HEADERS:
                kept.append((name, header))
        if error.event_id and all(name != "id" for name, _ in kept):
            kept.append(("id", error.event_id.encode()))
        fields = {
            "error": error.message,
            "error_type": error.error_type,
            "step": error.step,
            "source_topic": entered[0],
            "partition": entered[1],
            "offset": entered[2],
            "attempts": attempts,
            "uid": uid,
            "failed_topic": where[0],
            "failed_partition": where[1],
            "failed_offset": where[2],
        }
        kept += [(name, str(field).encode(errors="replace")) for name, field in fields.items()]
        return Outgoing(self.topic, bytes(value), key, kept)

    def _notify(self, error: ErrorRecord) -> None:
        self.sensors.dead_lettered(self.agent, error.error_type)
        if self.on_error is None:
            return
        try:
            self.on_error(error.to_dict())
        except Exception:
            logger.exception("agent %s: the graph's error handler failed on %s", self.agent, error)


def error_from_headers(headers: Any) -> dict[str, Any]:
    """The error record a dead letter's headers describe (the mock server's answer)."""
    found = {name: (value or b"").decode(errors="replace") for name, value in headers}
    return {
        "id": found.get("id", ""),
        "error": found.get("error", ""),
        "error_type": found.get("error_type", ""),
        "step": found.get("step", ""),
    }


def _pairs(headers: Any) -> list[Header]:
    pairs = []
    for name, value in headers or ():
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        pairs.append((str(name), value if value is None or isinstance(value, bytes) else bytes(value)))
    return pairs


def _header_id(headers: Any) -> str:
    for name, value in headers or ():
        if name == "id" and isinstance(value, bytes):
            return value.decode(errors="replace")
    return ""


def _int(value: bytes) -> int:
    try:
        return max(0, int(value))
    except ValueError:
        return 0
