"""Replay dead letters: re-produce selected requests from a graph's dead-letter topic to its
input topic, exactly as they first entered the graph. A letter without the request (no value,
or ``partition`` -1: a record between steps whose request is unknown) is counted, not sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.kafka_access import start_client
from pipeline.kafka_config import KafkaConfigLike, resolve
from pipeline.plan import Plan
from pipeline.runtime.deadletter import ERROR_HEADERS

KEPT = frozenset(ERROR_HEADERS) - {"attempts"}  # a replayed request's next failure counts on


@dataclass
class ReplaySummary:
    """What a replay read and sent."""

    read: int = 0
    replayed: int = 0
    unreadable: int = 0  # letters without a value: a record the client could not read, or dropped as too large
    unknown_origin: int = 0  # letters for records between steps that could not be decoded: the request is unknown
    by_error: dict[str, int] = field(default_factory=dict)


async def replay(
    bootstrap: str,
    plan: Plan,
    *,
    step: str | None = None,
    error_type: str | None = None,
    limit: int | None = None,
    group: str | None = None,
    kafka_config: KafkaConfigLike = None,
) -> ReplaySummary:
    """Re-produce the dead letters of ``plan`` that failed at ``step`` with ``error_type`` (each
    filter optional), at most ``limit``, to the graph's input topic.

    Reads the dead-letter topic up to its end at the start. With ``group``, the position reached
    is committed for that consumer group, so the next replay with the same group starts after
    it; without, every letter is read each time. ``kafka_config``: how to connect (see
    :func:`pipeline.kafka_config.resolve`).
    """
    config = resolve(kafka_config)
    options = config.client_options()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest", **options
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await start_client(consumer, bootstrap, config, "consumer")
    try:
        await start_client(producer, bootstrap, config, "producer")
    except BaseException:
        await consumer.stop()
        raise
    summary = ReplaySummary()
    try:
        partitions = [TopicPartition(plan.dlq, p) for p in sorted(await producer.partitions_for(plan.dlq))]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if group is None or await consumer.committed(tp) is None:
                await consumer.seek_to_beginning(tp)
        sends, reached = [], {}
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if limit is not None and summary.replayed >= limit:
                break
            batches = await consumer.getmany(*partitions, timeout_ms=1000, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] or (limit is not None and summary.replayed >= limit):
                        continue
                    summary.read += 1
                    reached[tp] = record.offset + 1
                    headers = {name: value for name, value in record.headers}
                    failed_at = (headers.get("step") or b"").decode(errors="replace")
                    kind = (headers.get("error_type") or b"").decode(errors="replace")
                    if (step is not None and failed_at != step) or (error_type is not None and kind != error_type):
                        continue
                    if headers.get("partition") == b"-1":  # not a request: never sent to the input topic
                        summary.unknown_origin += 1
                        continue
                    if not record.value:
                        summary.unreadable += 1
                        continue
                    kept = [(name, value) for name, value in record.headers if name not in KEPT]
                    sends.append(await producer.send(plan.source, record.value, key=record.key, headers=kept))
                    summary.replayed += 1
                    summary.by_error[kind] = summary.by_error.get(kind, 0) + 1
        await asyncio.gather(*sends)
        if group is not None and reached:
            await consumer.commit(reached)
    finally:
        await producer.stop()
        await consumer.stop()
    return summary
