"""Dead letters: the request exactly as it entered the graph (value, key, headers), so it can be
replayed to the input topic as it is, plus headers saying which step failed, why and where.

A letter whose request is unknown (a record between steps that cannot be decoded) says so with
``partition`` -1: replay skips it. A letter over a size limit is sent without its value
(``value_dropped`` gives its size), so a letter is never refused for good."""

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
    "value_dropped",
)
_ERROR_HEADERS = frozenset(ERROR_HEADERS)
MAX_ERROR_BYTES = 1024  # the ``error`` header's text, at most (an exception can quote a whole request)


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
        """A record that could not be decoded: its own bytes, key and headers. Only a request
        (a record of the input topic) says where it entered; any other record's ``partition``
        is -1, as its request is unknown: it is kept to be read, never replayed."""
        error = ErrorRecord.from_exception(_header_id(record.headers), self.agent, exc)
        where = (record.topic, record.partition, record.offset)
        value = record.value if isinstance(record.value, (bytes, bytearray)) else b""
        origin_topic = where if record.topic == self.source else (self.source, -1, -1)
        return self._letter(value, record.key, _pairs(record.headers), origin_topic, where, "", error)

    def for_event(self, event: Event, error: ErrorRecord) -> Outgoing:
        """A failed event: the request it came from, as it entered the graph."""
        where = event.src or ("", -1, -1)
        origin = origin_of(event) or Origin(b"", _bytes(event.key), tuple(event.headers.items()), -1, -1, 0)
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
                kept.append((str(name), _bytes(header)))
        if error.event_id and all(name != "id" for name, _ in kept):
            kept.append(("id", error.event_id.encode(errors="replace")))  # a letter never fails on its id
        fields = {
            "error": _capped(error.message),
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

    def shrunk(self, letter: Outgoing) -> Outgoing | None:
        """``letter``, over a size limit, made smaller: without its value (the ``value_dropped``
        header gives the value's size); if it had none, without the request's key and headers too
        (the error headers and ``id`` stay). None when nothing is left to drop."""
        if letter.value:
            headers = [(name, value) for name, value in letter.headers if name != "value_dropped"]
            headers.append(("value_dropped", str(len(letter.value)).encode()))
            return Outgoing(letter.topic, b"", letter.key, headers)
        bare = [
            (name, value)
            for name, value in letter.headers
            if name in _ERROR_HEADERS or (name == "id" and len(value or b"") <= MAX_ERROR_BYTES)
        ]
        if letter.key is None and len(bare) == len(letter.headers):
            return None
        return Outgoing(letter.topic, b"", None, bare)

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


def _capped(message: str) -> str:
    """``message`` cut to :data:`MAX_ERROR_BYTES` of UTF-8, saying so when it was."""
    if len(message) <= MAX_ERROR_BYTES // 4:  # 4 bytes a character at most: it fits
        return message
    data = message.encode(errors="replace")
    if len(data) <= MAX_ERROR_BYTES:
        return message
    return f"{data[:MAX_ERROR_BYTES].decode(errors='ignore')}... [truncated from {len(data)} bytes]"


def _bytes(value: Any) -> bytes | None:
    """A key or header value as a record carries it (a step may have set text)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode(errors="replace")
    try:
        return bytes(value)
    except (TypeError, ValueError):
        return str(value).encode(errors="replace")


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
