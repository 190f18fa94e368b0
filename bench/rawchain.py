"""One hop of the floor on aiokafka, written as well as we know how (the work: bench/hops.py).

Per batch from ``getmany``: the hop's work on every record at once, then one record batch per
output partition (``create_batch`` + ``send_batch``: a record keeps its partition number, which is
where its key hashes on topics of equal partition counts), nothing awaited on the hot path. Every
``commit_interval_ms`` a background task awaits the deliveries sent so far and then commits the
offsets they cover: at-least-once, as streamserve's agents. Client settings are streamserve's
(AgentSettings, with any overrides): batch bounds, linger, fetch wait (and fetch_min_bytes once
AgentSettings has it), acks=all.

Run one hop: python bench/rawchain.py HOP --bootstrap HOST:PORT --input TOPIC --output TOPIC
             --group GROUP [--set linger_ms=5,...]
(``floor.py`` starts all four through ``chains.Chain``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hops


class Committer:
    """Offsets consumed and deliveries in flight; commits in the background once delivered."""

    def __init__(self, consumer: Any, interval_s: float) -> None:
        self.consumer, self.interval_s = consumer, interval_s
        self.consumed: dict[Any, int] = {}
        self.in_flight: list[asyncio.Future] = []
        self.task: asyncio.Task | None = None
        self.last = time.monotonic()

    async def tick(self) -> None:
        """Start a commit when one is due and none is running (an earlier failure is raised)."""
        if self.task is not None and self.task.done():
            task, self.task = self.task, None
            task.result()
        if self.task is None and time.monotonic() - self.last >= self.interval_s:
            self.start()

    def start(self) -> None:
        offsets, deliveries, self.in_flight = dict(self.consumed), self.in_flight, []
        self.last = time.monotonic()
        if offsets:
            self.task = asyncio.ensure_future(self._commit(deliveries, offsets))

    async def _commit(self, deliveries: list[asyncio.Future], offsets: dict[Any, int]) -> None:
        await asyncio.gather(*deliveries)
        await self.consumer.commit(offsets)

    async def close(self) -> None:
        """Finish the commit under way, then commit everything consumed."""
        if self.task is not None:
            await self.task
        self.start()
        if self.task is not None:
            await self.task


async def run_hop(hop: str, bootstrap: str, source: str, target: str, group: str, settings: Any) -> None:
    """Consume ``source`` -> the hop's work -> produce to ``target``, committing behind, until SIGTERM."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    s = settings
    work = hops.transform(hop)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        fetch_min_bytes=getattr(s, "fetch_min_bytes", 1),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=s.linger_ms,
        max_batch_size=getattr(s, "batch_bytes", 16_384),
        max_request_size=s.max_request_size,
        compression_type=s.compression_type,
    )
    await producer.start()
    await consumer.start()
    committer = Committer(consumer, (getattr(s, "commit_interval_ms", None) or 100) / 1000)
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=s.max_batch_time_ms, max_records=s.max_batch_size)
            if batches:
                records = [record for batch in batches.values() for record in batch]
                values = work([r.value for r in records], [r.headers for r in records])
                index = 0
                for tp, batch in batches.items():
                    outputs = values[index : index + len(batch)]
                    index += len(batch)
                    committer.in_flight += await send(producer, target, tp.partition, batch, outputs)
                    committer.consumed[tp] = batch[-1].offset + 1
            await committer.tick()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(committer.close(), 15)
    finally:
        await consumer.stop()
        await producer.stop()


async def send(producer: Any, topic: str, partition: int, records: list[Any], values: list[bytes]) -> list[Any]:
    """``values`` (with their records' keys and headers) as record batches to ``partition``; the deliveries."""
    deliveries = []
    batch = producer.create_batch()
    for record, value in zip(records, values):
        headers = list(record.headers)
        if batch.append(key=record.key, value=value, timestamp=None, headers=headers) is None:
            batch.close()
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=record.key, value=value, timestamp=None, headers=headers)
    batch.close()
    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    return deliveries


def main() -> None:
    args = hops.arguments(__doc__)
    settings = hops.settings(args.set)
    asyncio.run(run_hop(args.hop, args.bootstrap, args.input, args.output, args.group, settings))


if __name__ == "__main__":
    main()
