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
from pipeline.runtime.deadletter import ERROR_HEADERS
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
        sent = await producer.send(topic, b'{"inputs": [[1]]}', headers=[(NotUtf8("x"), b"v")], partition=0)
        print((await sent).offset)
        await producer.stop()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


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
    done = subprocess.run(
        [sys.executable, "-c", BAD_HEADER_NAME, live.kafka, live.plan.source],
        env={**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    live.produced[int(done.stdout)] = (b'{"inputs": [[1]]}', None, [])
    live.send_good(20)
    live.check()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(hostile_values(), hostile_keys(), hostile_headers()), min_size=5, max_size=25))
def test_structured_hostile_batches_never_stop_a_worker(live, records):
    # Kafka clients send a null value only with a key (a tombstone); aiokafka refuses neither.
    asyncio.run(live.send([(b"" if v is None and k is None else v, k, h) for v, k, h in records]))
    live.send_good(3)
    live.check()
