"""Produce requests to a graph and read what comes out (CLI, demo, tests, benchmarks).

Every function connects as ``kafka_config`` says (see :func:`pipeline.kafka_config.resolve`:
None reads ``$STREAMSERVE_KAFKA_CONFIG``, else plaintext).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.codec import Format, decode_response, encode_response
from pipeline.errors import DeploymentError
from pipeline.events import new_event_id
from pipeline.kafka_access import start_client
from pipeline.kafka_config import KafkaConfigLike, resolve


@dataclass
class Request:
    """One request record: a V2 body, optional Kafka key and headers, and its wire format."""

    body: dict[str, Any]
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    format: Format = "json"
    raw: bytes | None = None  # bytes to send as they are (malformed input in tests)

    def __post_init__(self) -> None:
        self.body.setdefault("id", new_event_id())

    @property
    def id(self) -> str:
        return str(self.body["id"])

    def value(self) -> bytes:
        return self.raw if self.raw is not None else encode_response(self.body, self.format)


@dataclass
class Received:
    """A record read from an output or dead-letter topic."""

    body: Any
    key: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int
    received_s: float
    value: bytes
    topic: str = ""
    partition: int = -1
    offset: int = -1

    @property
    def event_id(self) -> str:
        """The id of the event this record answers (its ``id`` header)."""
        return self.headers.get("id", b"").decode(errors="replace")


async def produce(
    bootstrap: str,
    topic: str,
    requests: Iterable[Request],
    *,
    rate: float | None = None,
    on_sent: Callable[[Request, float], None] | None = None,
    kafka_config: KafkaConfigLike = None,
) -> int:
    """Send ``requests`` to ``topic`` (at ``rate`` per second if given); how many were acknowledged."""
    config = resolve(kafka_config)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all", **config.client_options())
    await start_client(producer, bootstrap, config, "producer")
    try:
        futures, start = [], time.perf_counter()
        for count, request in enumerate(requests):
            if rate:
                delay = start + count / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if on_sent is not None:
                on_sent(request, time.perf_counter())
            headers = [("id", request.id.encode())]
            headers += [(name, value) for name, value in request.headers.items() if name != "id"]
            futures.append(await producer.send(topic, request.value(), key=request.key, headers=headers))
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topics: list[str],
    *,
    timeout_s: float = 60,
    idle_s: float | None = None,
    read_committed: bool = False,
    group_id: str | None = None,
    until: Callable[[], bool] | None = None,
    kafka_config: KafkaConfigLike = None,
) -> AsyncIterator[tuple[str, Received]]:
    """Yield ``(topic, record)`` from the start of ``topics`` until ``timeout_s``, ``idle_s`` of
    silence, or ``until()`` turns true (checked between polls)."""
    config = resolve(kafka_config)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=group_id is not None,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
        **config.client_options(),
    )
    await start_client(consumer, bootstrap, config, "consumer")
    try:
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline and not (until is not None and until()):
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            now = time.perf_counter()
            for tp, records in batches.items():
                for record in records:
                    last = time.monotonic()
                    yield tp.topic, _received(record, now)
            if idle_s is not None and not batches and time.monotonic() - last > idle_s:
                return
    finally:
        await consumer.stop()


async def read_topics(
    bootstrap: str,
    topics: list[str],
    *,
    start: Literal["beginning", "end"] = "beginning",
    follow: bool = False,
    timeout_s: float | None = None,
    kafka_config: KafkaConfigLike = None,
) -> AsyncIterator[Received]:
    """Every record of ``topics`` from the ``start`` of each partition, in partition order.

    Without ``follow`` it stops at the end each partition had when reading began (like kcat's
    ``-e``); with it, it waits for more. ``timeout_s`` bounds the whole read. A topic that does
    not exist raises DeploymentError.
    """
    config = resolve(kafka_config)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **config.client_options()
    )
    await start_client(consumer, bootstrap, config, "consumer")
    try:
        existing = await consumer.topics()
        if missing := [topic for topic in topics if topic not in existing]:
            raise DeploymentError(f"no topic {', '.join(map(repr, missing))} on {bootstrap}")
        consumer.subscribe(topics)  # no group: every partition, once the metadata names them
        waited = time.monotonic() + 30
        while not {tp.topic for tp in consumer.assignment()} >= set(topics):
            if time.monotonic() > waited:
                raise DeploymentError(f"no partitions of {', '.join(topics)} within 30 s on {bootstrap}")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await (consumer.seek_to_end if start == "end" else consumer.seek_to_beginning)(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while follow or pending:
            if deadline is not None and time.monotonic() >= deadline:
                return
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.perf_counter()
            for tp, records in batches.items():
                for record in records:
                    yield _received(record, now)
                if tp in pending and await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()


def _received(record: Any, now: float) -> Received:
    return Received(
        decoded_body(record.value),
        record.key,
        dict(record.headers),
        record.timestamp,
        now,
        record.value,
        record.topic,
        record.partition,
        record.offset,
    )


def decoded_body(value: bytes | None) -> Any:
    """The decoded record value; None when empty or not decodable (raw bytes stay in ``value``)."""
    if not value:
        return None
    try:
        return decode_response(value)
    except Exception:
        return None
