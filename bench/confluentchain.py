"""One hop of the floor on confluent-kafka (librdkafka), written as its docs advise (work: bench/hops.py).

Per batch (what librdkafka has buffered, up to ``max_batch_size``; when it has nothing, the first
record to arrive within ``max_batch_time_ms`` and what came with it: aiokafka's ``getmany``
semantics, since ``consume(n, timeout)`` alone waits for n records or the timeout, 100 ms of
latency per hop at moderate rates): the hop's work on every record at once, then one
``produce`` per record into librdkafka's own per-partition batches (a record keeps its partition
number, which is where its key hashes on topics of equal partition counts). At-least-once the
librdkafka way: ``enable.auto.offset.store=false``, a batch's offsets are stored once its last
delivery report arrives (served by ``poll(0)`` on the loop), and librdkafka's background
auto-commit commits stored offsets every ``commit_interval_ms``. Ordering per partition makes a
stored offset safe: librdkafka delivers a partition's records in order. Client settings are
streamserve's (AgentSettings, with any overrides): batch bounds, linger, fetch wait (and fetch_min_bytes once
AgentSettings has it), acks=all;
Nagle off (``socket.nagle.disable``, librdkafka leaves it on): asyncio sets TCP_NODELAY on the
sockets of aiokafka and so of streamserve, so all three talk to the broker alike.

Run one hop: python bench/confluentchain.py HOP --bootstrap HOST:PORT --input TOPIC --output TOPIC
             --group GROUP [--set linger_ms=5,...]
(``floor.py`` starts all four through ``chains.Chain``.)
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hops


class Batch:
    """One consumed batch: its outputs' outstanding delivery reports and the offsets to store after."""

    __slots__ = ("consumer", "failed", "offsets", "outstanding")

    def __init__(self, consumer: Any, offsets: list[Any], outstanding: int, failed: list[str]) -> None:
        self.consumer, self.offsets, self.outstanding, self.failed = consumer, offsets, outstanding, failed

    def delivered(self, error: Any, message: Any) -> None:
        """librdkafka's delivery report for one output."""
        if error is not None:
            self.failed.append(str(error))
            return
        self.outstanding -= 1
        if self.outstanding == 0:
            try:
                self.consumer.store_offsets(offsets=self.offsets)
            except Exception as exc:  # the partition was revoked: its next owner reads these again
                print(f"store_offsets: {exc}", file=sys.stderr, flush=True)


def run_hop(hop: str, bootstrap: str, source: str, target: str, group: str, settings: Any) -> None:
    """Consume ``source`` -> the hop's work -> produce to ``target``, committing behind, until SIGTERM."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    s = settings
    work = hops.transform(hop)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": getattr(s, "commit_interval_ms", None) or 100,
            "session.timeout.ms": s.session_timeout_ms,
            "heartbeat.interval.ms": s.heartbeat_interval_ms,
            "fetch.wait.max.ms": s.fetch_max_wait_ms,
            "fetch.min.bytes": getattr(s, "fetch_min_bytes", 1),
            "socket.nagle.disable": True,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": s.linger_ms,
            "message.max.bytes": s.max_request_size,
            "compression.type": s.compression_type or "none",
            "socket.nagle.disable": True,
        }
    )
    consumer.subscribe([source])
    failed: list[str] = []
    timeout_s = s.max_batch_time_ms / 1000
    try:
        while not stopping.is_set():
            messages = consumer.consume(num_messages=s.max_batch_size, timeout=0)
            if not messages:
                first = consumer.poll(timeout_s)
                if first is not None:
                    messages = [first, *consumer.consume(num_messages=s.max_batch_size - 1, timeout=0)]
            producer.poll(0)
            if failed:
                raise RuntimeError(f"hop {hop}: deliveries failed: {failed[:3]}")
            good = [message for message in messages if message.error() is None]
            if not good:
                continue
            headers = [message.headers() or [] for message in good]
            values = work([message.value() for message in good], headers)
            last: dict[int, int] = {}
            for message in good:
                last[message.partition()] = message.offset()
            offsets = [TopicPartition(source, partition, offset + 1) for partition, offset in last.items()]
            batch = Batch(consumer, offsets, len(good), failed)
            for message, value, record_headers in zip(good, values, headers):
                while True:
                    try:
                        producer.produce(
                            target,
                            value,
                            key=message.key(),
                            headers=record_headers,
                            partition=message.partition(),
                            on_delivery=batch.delivered,
                        )
                        break
                    except BufferError:  # librdkafka's queue is full: serve reports until it drains
                        producer.poll(0.005)
    finally:
        producer.flush(15)
        consumer.close()  # commits the offsets stored so far


def main() -> None:
    args = hops.arguments(__doc__)
    settings = hops.settings(args.set)
    run_hop(args.hop, args.bootstrap, args.input, args.output, args.group, settings)


if __name__ == "__main__":
    main()
