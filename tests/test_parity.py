"""Parity: the same graph and requests on the mock server (strict and default) and deployed on
Kafka give the same answers and the same dead letters."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from graphs import parity_graph

from pipeline.client import Request, consume, produce
from pipeline.codec import decode_response, encode_response
from pipeline.loading import load_graph
from pipeline.mock import MockRequest
from pipeline.plan import build_plan
from pipeline.topics import ensure_topics

GRAPHS = Path(__file__).parent / "graphs.py"


def requests() -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """Rows -5..34 (negatives fail the batching model, 13 is filtered), some for the ensemble,
    the broken model and an unknown one, and a request without inputs."""
    made = []
    for n in range(40):
        value = float(n - 5)
        headers = {}
        if n % 7 == 3:
            headers = {"model": b"ens"}
        elif n % 11 == 4:
            headers = {"model": b"broken"}
        elif n == 39:
            headers = {"model": b"zz"}
        elif n % 5 == 1:
            headers = {"model": b"scaled"}
        body = {"id": f"p{n}", "inputs": [[value]]}
        made.append(({**body, "scale": 10.0**n} if headers.get("model") == b"scaled" else body, headers))
    made.append(({"id": "no-inputs", "rows": [[1.0]]}, {}))
    return made


def comparable(answers: list[Any], errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers (as a JSON reader sees them, without timestamps) and dead letters, by request id."""
    seen: dict[str, Any] = {}
    for answer in answers:
        body = decode_response(encode_response(answer))
        body.pop("timestamp", None)
        seen[body["id"]] = body
    for error in errors:
        seen[error["id"]] = (error["step"], error["error_type"])
    return seen


def on_mock(strict: bool) -> dict[str, Any]:
    server = parity_graph().to_mock_server(strict=strict)
    answers, errors = server.test_many([MockRequest(body, "/", headers) for body, headers in requests()])
    return comparable(answers, errors)


def test_strict_and_default_mock_servers_agree_and_answer_what_the_graph_means():
    strict, default = on_mock(strict=True), on_mock(strict=False)
    assert strict == default
    assert "p18" not in strict  # 13: filtered
    assert strict["p0"] == ("picky", "ValueError")  # a negative row fails alone in its batch
    assert strict["p7"]["outputs"] == [4 * 2.0 + 100]  # 2v + v + (v + 100): no branch saw the other one's change
    assert strict["p3"]["outputs"] == [2.0] and strict["p3"]["model_name"] == "ens"
    assert strict["p4"] == ("broken", "ValueError") and strict["p39"] == ("models", "RoutingError")
    assert strict["no-inputs"] == ("start", "KeyError")
    scaled = [n for n in range(40) if requests()[n][1].get("model") == b"scaled"]
    assert len(scaled) > 3 and all(strict[f"p{n}"]["outputs"] == [2 * (n - 5) * 10.0**n] for n in scaled)
    assert len(strict) == 40


@pytest.mark.kafka
def test_kafka_answers_exactly_as_the_strict_mock_server(kafka, monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    reference = f"{GRAPHS}:parity_graph"
    plan = build_plan(load_graph(reference))
    ensure_topics(kafka, plan)
    expected = on_mock(strict=True)
    sent = [Request(dict(body), headers=headers) for body, headers in requests()]
    answers, errors = kafka_answers(kafka, reference, plan, sent, set(expected), tmp_path / "worker.log")
    assert comparable(answers, errors) == expected


def kafka_answers(
    kafka: str, reference: str, plan: Any, sent: list[Request], ids: set[str], log_path: Path
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Run every agent of ``reference`` in one worker process, send ``sent`` and read the answers
    and dead letters until every one of ``ids`` came (and a little more)."""
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", reference, "--bootstrap", kafka], stdout=log, stderr=log
        )
    try:
        asyncio.run(produce(kafka, plan.source, sent))
        return asyncio.run(_read(kafka, plan, ids))
    finally:
        worker.terminate()
        worker.wait(30)


async def _read(kafka: str, plan: Any, ids: set[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    answers: list[Any] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    complete_at: list[float] = []

    def done() -> bool:
        if not complete_at and ids <= seen:
            complete_at.append(time.monotonic())
        return bool(complete_at) and time.monotonic() - complete_at[0] > 3  # then a filtered one would show

    async for topic, record in consume(kafka, [plan.sink, plan.dlq], timeout_s=180, until=done):
        seen.add(record.event_id)
        if topic == plan.sink:
            answers.append(record.body)
        else:
            fields = {name: value.decode() for name, value in record.headers.items() if value is not None}
            errors.append({"id": fields["id"], "step": fields["step"], "error_type": fields["error_type"]})
    return answers, errors
