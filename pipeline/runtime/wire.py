"""How an agent turns records into events and events into records: bytes (Kafka, and the
strict mock server), or the event objects themselves (the default mock server)."""

from __future__ import annotations

from typing import Protocol

from pipeline.codec import (
    as_delivered,
    decode_envelope,
    decode_request,
    encode_envelope,
    encode_response,
    request_event,
    utf8_encodable,
)
from pipeline.errors import CodecError
from pipeline.events import Event
from pipeline.runtime.transport import Outgoing, Record


class Wire(Protocol):
    """Decodes an agent's input records and encodes its outputs."""

    def decode(self, record: Record) -> Event:
        """The event ``record`` carries; raises CodecError."""

    def encode(self, topic: str, event: Event) -> Outgoing:
        """The record that carries ``event`` to ``topic``."""

    def next_batch(self) -> None:
        """A new batch of outputs begins."""


class BytesWire:
    """Requests in (JSON or msgpack), msgpack envelopes between steps, answers in the request's
    format: what crosses Kafka."""

    def __init__(self, source: str, sink: str, id_keyed: frozenset[str]) -> None:
        self.source, self.sink, self.id_keyed = source, sink, id_keyed

    def decode(self, record: Record) -> Event:
        if record.topic == self.source:
            return decode_request(record)
        return decode_envelope(record.value, dict(record.headers))

    def encode(self, topic: str, event: Event) -> Outgoing:
        headers = record_headers(event)
        if topic == self.sink:
            value = encode_response(event.body, event.meta.get("format", "json"))
            return Outgoing(topic, value, event.key, headers, event)
        key = event.uid.encode() if topic in self.id_keyed else event.key
        return Outgoing(topic, encode_envelope(event), key, headers, event)

    def next_batch(self) -> None:
        """Bytes are independent copies: nothing to track."""


class ObjectWire(BytesWire):
    """Requests arrive as bodies (no bytes: a dead letter carries none); between steps the
    event objects travel, each body through the inter-step codec, so the next step gets what a
    Kafka hop delivers (its own copy; numbers for numpy scalars, lists for tuples) and a body
    that Kafka could not carry fails here too. An event sent a second time in one batch
    (branches) is copied, so each branch owns its headers and meta, as over Kafka."""

    def __init__(self, source: str, sink: str, id_keyed: frozenset[str]) -> None:
        super().__init__(source, sink, id_keyed)
        self._sent: set[int] = set()

    def decode(self, record: Record) -> Event:
        if record.topic == self.source:
            return request_event(record.value, "json", b"", record)
        return record.value

    def encode(self, topic: str, event: Event) -> Outgoing:
        record_headers(event)  # what Kafka could not carry fails here too
        if topic == self.sink:
            return Outgoing(topic, event.body, event.key, [], event)
        body = as_delivered(event.body)
        if id(event) in self._sent:
            event = event.branch(body)
        else:
            self._sent.add(id(event))
            event.body = body
        key = event.uid.encode() if topic in self.id_keyed else event.key
        return Outgoing(topic, event, key, [], event)

    def next_batch(self) -> None:
        self._sent.clear()


def record_headers(event: Event) -> list[tuple[str, bytes | None]]:
    """The headers of the record that carries ``event``, its ``id`` header its event's id (set at
    the first hop, then carried on); :class:`CodecError` unless its key is bytes or None, its header
    names text UTF-8 can encode and its header values bytes or None.

    A step that sets ``event.key = "cust-42"`` gets a dead letter naming the problem rather than
    text quietly encoded one way here and another way by a client: it should set bytes
    (``"cust-42".encode()``). Checked on every wire alike, so the mock server answers as Kafka does.
    """
    key = event.key
    if key is not None and not isinstance(key, bytes):
        raise CodecError(f"the event's key must be bytes or None, not {type(key).__name__} ({key!r:.60})")
    marked = event.id.encode()  # the codec refuses requests whose id cannot be; a step's own fails here
    headers: list[tuple[str, bytes | None]] = []
    for name, value in event.headers.items():
        if type(name) is not str or not utf8_encodable(name):
            raise CodecError(f"header name {name!r:.60} must be text UTF-8 can encode")
        if value is not None and not isinstance(value, bytes):
            raise CodecError(f"header {name!r:.60} must be bytes or None, not {type(value).__name__} ({value!r:.60})")
        if name == "id":
            if value != marked:
                continue
            marked = None
        headers.append((name, value))
    if marked is not None:
        headers.append(("id", marked))
    return headers
