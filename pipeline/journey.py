"""Where one request went, read back from a graph's topics: the request as it entered, each hop
between steps with its timestamp, and the answer or the dead letter with its reason.

A client id may repeat (clients retry): each request record with that id is traced on its own,
by the internal identity (``uid``) every hop carries in its envelope and dead letter.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from pipeline.client import Received, read_topics
from pipeline.codec import decode_envelope, decode_request
from pipeline.errors import CodecError
from pipeline.kafka_config import KafkaConfigLike
from pipeline.plan import Plan

__all__ = ["Hop", "Journey", "as_json", "render", "trace_request"]


@dataclass
class Hop:
    """One record of the request on one topic."""

    kind: str  # "request", "hop", "answer" or "dead letter"
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    to: str = ""  # the agent that reads the topic
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Journey:
    """Every record one request (one ``uid``) left in the graph's topics, in time order."""

    request_id: str
    uid: str
    hops: list[Hop] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """``answered``, ``dead-lettered``, both, or ``in flight``."""
        kinds = {hop.kind for hop in self.hops}
        if {"answer", "dead letter"} <= kinds:
            return "answered and dead-lettered"
        return "answered" if "answer" in kinds else "dead-lettered" if "dead letter" in kinds else "in flight"


async def trace_request(
    bootstrap: str, plan: Plan, request_id: str, *, kafka_config: KafkaConfigLike = None
) -> list[Journey]:
    """The journeys of the requests whose client id is ``request_id``, oldest first, read from
    the beginning to the current end of every topic of ``plan``."""
    readers = {agent.input: agent.name for agent in plan.agents}
    topics = list(dict.fromkeys([plan.source, *readers, plan.sink, plan.dlq]))
    journeys: dict[str, Journey] = {}
    answers: list[Hop] = []
    async for record in read_topics(bootstrap, topics, kafka_config=kafka_config):
        hop = Hop("", record.topic, record.partition, record.offset, record.timestamp_ms, readers.get(record.topic, ""))
        header_id = (record.headers.get("id") or b"").decode(errors="replace")
        if record.topic == plan.source:
            uid = _request_uid(record, request_id)
            if uid is None:
                continue
            hop.kind, hop.detail = "request", {"key": _text(record.key), "headers": _headers(record)}
        elif header_id != request_id:
            continue
        elif record.topic == plan.dlq:
            hop.kind, uid = "dead letter", (record.headers.get("uid") or b"").decode(errors="replace")
            hop.detail = {k: v for k, v in _headers(record).items() if k in ("step", "error_type", "error")}
        elif record.topic == plan.sink:
            hop.kind, hop.detail = "answer", {"body": record.body}
            answers.append(hop)
            continue
        else:
            try:
                event = decode_envelope(record.value, dict(record.headers))
            except CodecError:
                continue
            hop.kind, uid = "hop", event.uid
        journeys.setdefault(uid, Journey(request_id, uid)).hops.append(hop)
    for answer in answers:  # answers carry no uid: the journey last seen before the answer
        owner = max(journeys.values(), key=_last_seen_before(answer.timestamp_ms), default=None)
        if owner is None:
            owner = journeys.setdefault("?", Journey(request_id, "?"))
        owner.hops.append(answer)
    for journey in journeys.values():
        journey.hops.sort(key=lambda hop: (hop.timestamp_ms, _ORDER[hop.kind]))
    return sorted(journeys.values(), key=lambda j: j.hops[0].timestamp_ms)


_ORDER = {"request": 0, "hop": 1, "answer": 2, "dead letter": 3}


def _last_seen_before(ms: int) -> Any:
    def latest(journey: Journey) -> int:
        return max((hop.timestamp_ms for hop in journey.hops if hop.timestamp_ms <= ms), default=-1)

    return latest


def _request_uid(record: Received, request_id: str) -> str | None:
    """The uid of a request record whose client id is ``request_id``, else None."""
    raw = SimpleNamespace(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp_ms,
        key=record.key,
        value=record.value,
        headers=list(record.headers.items()),
    )
    try:
        event = decode_request(raw)
    except CodecError:
        header = record.headers.get("id")
        if header is None or header.decode(errors="replace") != request_id:
            return None
        return f"{record.partition}.{record.offset}.{record.timestamp_ms}"
    return event.uid if event.id == request_id else None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="backslashreplace")


def _headers(record: Received) -> dict[str, str | None]:
    return {name: _text(value) for name, value in record.headers.items()}


def render(journeys: list[Journey], request_id: str) -> str:
    """The journeys as text: one block per request, one line per hop with its time offset."""
    if not journeys:
        return f"no request with id {request_id!r} in the graph's topics"
    blocks = []
    for journey in journeys:
        first = journey.hops[0]
        lines = [f"request {request_id!r} (uid {journey.uid}): {journey.outcome}, entered {_when(first.timestamp_ms)}"]
        for hop in journey.hops:
            where = f"{hop.topic}[{hop.partition}]@{hop.offset}"
            lines.append(f"  {f'+{hop.timestamp_ms - first.timestamp_ms} ms':>10}  {where:<32} {_what(hop)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def as_json(journeys: list[Journey]) -> str:
    """The journeys as one JSON document."""
    return json.dumps([{**asdict(j), "outcome": j.outcome} for j in journeys], default=str)


def _what(hop: Hop) -> str:
    if hop.kind == "request":
        key = hop.detail.get("key")
        return f"request -> {hop.to}" + (f"  key={key}" if key is not None else "")
    if hop.kind == "hop":
        return f"-> {hop.to}"
    if hop.kind == "answer":
        return f"answer  {json.dumps(hop.detail.get('body'), default=str)[:300]}"
    detail = hop.detail
    return f"dead letter  step {detail.get('step')}: {detail.get('error_type')}: {detail.get('error')}"


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")
