"""Replaying dead letters: what failed after the first step goes back to the input topic as it
first entered, by step and error type, and is answered once the cause is fixed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.client import Received, Request, consume, produce
from pipeline.loading import load_graph
from pipeline.plan import build_plan
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

pytestmark = pytest.mark.kafka
GRAPHS = Path(__file__).parent / "graphs.py"


def replay(kafka: str, reference: str, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", reference, "--bootstrap", kafka, *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def read(kafka: str, topics: list[str], count: int) -> list[tuple[str, Received]]:
    async def collect() -> list[tuple[str, Received]]:
        seen: list[tuple[str, Received]] = []
        async for topic, record in consume(kafka, topics, timeout_s=90, until=lambda: len(seen) >= count):
            seen.append((topic, record))
        return seen

    return asyncio.run(collect())


def test_dead_letters_replay_as_they_entered_and_are_answered_once_fixed(kafka, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    flag = tmp_path / "flag"
    monkeypatch.setenv("STREAMSERVE_TEST_FLAG", str(flag))
    reference = f"{GRAPHS}:replay_graph"
    plan = build_plan(load_graph(reference))
    ensure_topics(kafka, plan)
    failing = [Request({"inputs": [[n, 1]]}, key=f"k{n}".encode(), headers={"trace": b"t%d" % n}) for n in range(10)]
    unknown = [Request({"inputs": [[1, 1]]}, headers={"model": b"nope"}) for _ in range(2)]
    with Supervisor(reference, kafka, plan=plan, log_dir=tmp_path).start_all():
        asyncio.run(produce(kafka, plan.source, failing + unknown))
        letters = dict((r.event_id, r) for _, r in read(kafka, [plan.dlq], 12))
        assert {letters[r.id].headers["step"] for r in failing} == {b"flaky"}
        assert {letters[r.id].headers["error_type"] for r in unknown} == {b"RoutingError"}
        for request in failing:  # the request as it entered: value, key and headers
            letter = letters[request.id]
            assert (letter.value, letter.key, letter.headers["trace"]) == (
                request.value(),
                request.key,
                request.headers["trace"],
            )
            assert letter.headers["source_topic"].decode() == plan.source
            assert letter.headers["failed_topic"].decode() == f"{plan.graph.name}.flaky"

        flag.touch()  # the cause is fixed
        assert replay(kafka, reference, "--step", "flaky", "--group", "ops").startswith("replayed 10 of 12 ")
        assert replay(kafka, reference, "--step", "flaky", "--group", "ops").startswith("replayed 0 of 0 ")
        answers = {r.event_id: r.body for topic, r in read(kafka, [plan.sink], 10)}
        assert {i: answers[i]["outputs"] for i in answers} == {r.id: [r.body["inputs"][0][0] + 1] for r in failing}

        assert replay(kafka, reference, "--error-type", "RoutingError", "--limit", "1").startswith("replayed 1 of ")
        again = [r for topic, r in read(kafka, [plan.dlq], 13) if r.headers.get("attempts") == b"2"]
        assert len(again) == 1 and again[0].event_id in {r.id for r in unknown}
        replayed = next(r for r in unknown if r.id == again[0].event_id)  # the first in the letters' order
        assert again[0].value == replayed.value()
