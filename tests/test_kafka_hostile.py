"""Hostile records produced to a live deployment: every one is answered or dead-lettered with
its own bytes, key and headers, no worker stops, and good requests after them are answered."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import hostile_headers, hostile_keys, hostile_values

from pipeline.client import Received, consume
from pipeline.loading import load_graph
from pipeline.plan import build_plan
from pipeline.runner import agent_loop
from pipeline.runtime.deadletter import ERROR_HEADERS
from pipeline.runtime.settings import AgentSettings
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

pytestmark = pytest.mark.kafka
HELPERS = Path(__file__).parent / "helpers.py"

# A producer that writes a header name which is not UTF-8 (aiokafka's own client refuses to
# read such a record: every poll of its partition fails from there on).
BAD_HEADER_NAME = textwrap.dedent(
    """
    import asyncio, sys
    from aiokafka import AIOKafkaProducer

    class NotUtf8(str):
        def encode(self, *args, **kwargs):
            return b"\\xff\\xfe-name"

    async def main(bootstrap, topic):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        partition = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        sent = await producer.send(topic, b'{"inputs": [[1]]}', headers=[(NotUtf8("x"), b"v")], partition=partition)
        print((await sent).offset)
        await producer.stop()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def produce_unreadable(kafka: str, topic: str, partition: int = 0) -> int:
    """Produce a record the Kafka client cannot read to ``partition``; its offset."""
    done = subprocess.run(
        [sys.executable, "-c", BAD_HEADER_NAME, kafka, topic, str(partition)],
        env={**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@dataclass
class Live:
    """A deployed graph, and every record produced to its partition 0 so far (by offset)."""

    kafka: str
    plan: Any
    workers: Supervisor
    produced: dict[int, tuple[bytes | None, bytes | None, list]] = field(default_factory=dict)
    good: set[str] = field(default_factory=set)

    async def send(self, records: list[tuple[bytes | None, bytes | None, list]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka, max_request_size=4_000_000)
        await producer.start()
        try:
            for value, key, headers in records:
                sent = await producer.send(self.plan.source, value, key=key, headers=headers, partition=0)
                self.produced[(await sent).offset] = (value, key, headers)
        finally:
            await producer.stop()

    def send_good(self, count: int) -> None:
        tag = time.time_ns()
        ids = [f"good-{tag}-{n}" for n in range(count)]
        self.good.update(ids)
        asyncio.run(self.send([(f'{{"id": "{i}", "inputs": [[2]]}}'.encode(), None, []) for i in ids]))

    def outcomes(self) -> tuple[list[Received], list[Received]]:
        """Every answer and dead letter so far, once as many as records produced have come."""

        async def read() -> tuple[list[Received], list[Received]]:
            answers: list[Received] = []
            dead: list[Received] = []
            quiet: list[float] = []

            def done() -> bool:
                if len(answers) + len(dead) >= len(self.produced) and not quiet:
                    quiet.append(time.monotonic())
                return bool(quiet) and time.monotonic() - quiet[0] > 2  # then a record answered twice would show

            async for topic, record in consume(self.kafka, [self.plan.sink, self.plan.dlq], timeout_s=120, until=done):
                (answers if topic == self.plan.sink else dead).append(record)
            return answers, dead

        return asyncio.run(read())

    def check(self) -> None:
        answers, dead = self.outcomes()
        assert len(answers) + len(dead) == len(self.produced), "every record once: an answer or a dead letter"
        for letter in dead:
            offset = int(letter.headers["offset"])
            value, key, headers = self.produced[offset]
            if b"cannot be read by the Kafka client" in letter.headers["error"]:
                continue  # its bytes cannot be had: it is dead-lettered by position
            assert (letter.value, letter.key) == (value or b"", key), f"offset {offset}"
            original = {name: header for name, header in headers if name not in ERROR_HEADERS}
            assert {name: letter.headers.get(name) for name in original} == original, f"offset {offset}"
        assert self.good <= {answer.event_id for answer in answers}
        assert all(process.poll() is None for process in self.workers.processes.values()), "a worker stopped"


@pytest.fixture(scope="module")
def live(kafka, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
        reference = f"{HELPERS}:fault_graph"
        plan = build_plan(load_graph(reference))
        ensure_topics(kafka, plan)
        with Supervisor(reference, kafka, plan=plan, log_dir=tmp_path_factory.mktemp("hostile")).start_all() as workers:
            yield Live(kafka, plan, workers)


def test_each_class_of_hostile_record_is_dead_lettered_and_the_workers_go_on(live):
    nested_json = b"[" * 50_000 + b"]" * 50_000
    records = [
        (b"\xc7\x00\x01", None, []),  # truncated msgpack
        (nested_json, b"k", []),
        (b"\x91" * 3_000 + b"\xc0", None, []),  # deep msgpack
        (msgpack.packb({"inputs": msgpack.ExtType(1, b"\x92\xa2|O\x91\x01xxxxxxxx")}), None, []),  # forged array
        (None, b"\xff\xfe\x00", []),  # no value, a key that is not UTF-8
        (b'{"inputs": [[1]]}', b"\x80\x81", [("model", None), ("path", b"\xff/v2"), ("trace", b"\x00\xff")]),
        (b"{" + b" " * 2_000_000 + b"}", None, []),  # 2 MB: over the topic's 1 MiB limit? it is refused
        (b'{"inputs": [' + b"9" * 5_000 + b"]}", None, [("id", b"\xff\xfe")]),
    ]
    too_big = records.pop(6)
    asyncio.run(live.send(records))
    with pytest.raises(Exception, match=r"TooLarge"):
        asyncio.run(live.send([too_big]))  # the broker refuses it: it never reaches the graph
    live.produced[produce_unreadable(live.kafka, live.plan.source)] = (b'{"inputs": [[1]]}', None, [])
    live.send_good(20)
    live.check()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(hostile_values(), hostile_keys(), hostile_headers()), min_size=5, max_size=25))
def test_structured_hostile_batches_never_stop_a_worker(live, records):
    # Kafka clients send a null value only with a key (a tombstone); aiokafka refuses neither.
    asyncio.run(live.send([(b"" if v is None and k is None else v, k, h) for v, k, h in records]))
    live.send_good(3)
    live.check()


def test_an_unreadable_record_loses_no_record_of_the_other_partitions(kafka, monkeypatch):
    """The client drains some partitions, then fails on the unreadable record of another: what it
    drained must still reach the agent. Each round puts the unreadable record in another partition,
    read at once with good records of every partition by a member that just joined."""
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    plan = build_plan(load_graph(f"{HELPERS}:echo_graph"))
    ensure_topics(kafka, plan)
    partitions = len(asyncio.run(topic_partitions(kafka, plan.source)))
    assert partitions > 1
    good: set[str] = set()
    for round_ in range(partitions):
        ids = [f"r{round_}-p{p}-{n}" for p in range(partitions) for n in range(5)]
        good.update(ids)
        asyncio.run(produce_to(kafka, plan.source, ids, partitions))
        produce_unreadable(kafka, plan.source, round_)
        processed = asyncio.run(run_agent_until(kafka, plan, len(ids)))
        assert processed == len(ids), f"round {round_}: {processed} of {len(ids)} good records reached the agent"

    async def read() -> tuple[list[Received], list[Received]]:
        answers: list[Received] = []
        dead: list[Received] = []
        until = lambda: len(answers) >= len(good) and len(dead) >= partitions  # noqa: E731
        async for topic, record in consume(kafka, [plan.sink, plan.dlq], timeout_s=60, until=until):
            (answers if topic == plan.sink else dead).append(record)
        return answers, dead

    answers, dead = asyncio.run(read())
    assert {answer.event_id for answer in answers} == good
    assert sorted(letter.headers["partition"] for letter in dead) == [str(p).encode() for p in range(partitions)]
    assert all(b"cannot be read by the Kafka client" in letter.headers["error"] for letter in dead)


async def topic_partitions(kafka: str, topic: str) -> set[int]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        return await producer.partitions_for(topic)
    finally:
        await producer.stop()


async def produce_to(kafka: str, topic: str, ids: list[str], partitions: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        for n, event_id in enumerate(ids):
            value = f'{{"id": "{event_id}", "inputs": [[2]]}}'.encode()
            await producer.send_and_wait(topic, value, partition=n // (len(ids) // partitions))
    finally:
        await producer.stop()


async def run_agent_until(kafka: str, plan: Any, count: int, timeout_s: float = 40) -> int:
    """Run the graph's one agent in this process (a new member of its group) until it processed
    ``count`` events or ``timeout_s`` passed; how many it processed."""
    loop = agent_loop(plan, plan.agents[0], kafka, AgentSettings(instance="test"), None)
    await loop.start()
    deadline = time.monotonic() + timeout_s
    try:
        while loop.processed < count and time.monotonic() < deadline:
            await loop.poll_once()
    finally:
        await loop.close()
    return loop.processed
