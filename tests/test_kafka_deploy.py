"""The iris graph and an ensemble deployed as separate worker processes on a real broker."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from helpers import slow_ensemble_graph

from pipeline.client import Request
from pipeline.demo import drive, example_reference, example_root, make_requests
from pipeline.loading import load_graph
from pipeline.plan import build_plan
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

pytestmark = pytest.mark.kafka
ASSIGNED = re.compile(r"agent (\S+) assigned \[(.*)\]")


def deploy(
    kafka: str, reference: str, logs: Path, extra: dict[str, int] | None = None, config: Path | None = None
) -> Supervisor:
    plan = build_plan(load_graph(reference))
    ensure_topics(kafka, plan, config)
    workers = Supervisor(reference, kafka, plan=plan, log_dir=logs).start_all()
    for name, count in (extra or {}).items():
        for instance in range(1, count):
            workers.start(name, instance)
    return workers


@pytest.fixture(scope="module")
def iris(kafka: str, tmp_path_factory: pytest.TempPathFactory):
    """The iris graph, one worker per agent and two for ``lr``, answering its warm-up."""
    reference, logs = example_reference(), tmp_path_factory.mktemp("iris-workers")
    workers = deploy(kafka, reference, logs, {"lr": 2}, example_root() / "topics.yaml")
    warm_up, _, _ = asyncio.run(drive(kafka, reference, make_requests(3, bad_every=0), timeout_s=120))
    assert warm_up.answered == 3, f"deployment did not answer; logs in {logs}"
    yield reference, logs
    codes = workers.stop()
    assert set(codes.values()) == {0}, f"workers did not stop cleanly on SIGTERM: {codes}; logs in {logs}"


def test_every_prediction_equals_the_mock_servers(kafka, iris):
    reference, _ = iris
    summary, answers, _dead = asyncio.run(drive(kafka, reference, make_requests(2000, bad_every=0, seed=11)))
    assert (summary.answered, summary.missing, summary.dead_letters) == (2000, 0, 0)
    assert summary.mismatches == 0
    assert {body["model_name"] for body in answers.values()} == {"lr", "rf", "vote"}


def test_a_step_scaled_to_two_workers_splits_its_partitions(kafka, iris):
    reference, logs = iris
    requests = [
        Request({"inputs": [[6.0, 3.0, 4.8, 1.8]]}, key=f"k{i}".encode(), headers={"model": b"lr"}) for i in range(200)
    ]
    summary, _, _ = asyncio.run(drive(kafka, reference, requests))
    assert summary.answered == 200 and summary.mismatches == 0
    deadline = time.monotonic() + 30
    while True:
        owned = [_last_assignment(logs / f"lr.{instance}.log") for instance in (0, 1)]
        if all(owned) and not owned[0] & owned[1] and len(owned[0] | owned[1]) == 6:
            break
        assert time.monotonic() < deadline, f"lr partitions not split between two workers: {owned}"
        time.sleep(1)


def _last_assignment(log: Path) -> set[str]:
    found = [m.group(2) for m in ASSIGNED.finditer(log.read_text()) if m.group(1) == "lr"]
    return {p.strip(" '") for p in found[-1].split(",") if p.strip()} if found else set()


BAD = {
    "not msgpack or json": (b"\xc1\xc1\xc1", {}, "pre", "CodecError", "neither valid JSON nor msgpack"),
    "json of the wrong type": (b"[1, 2, 3]", {}, "pre", "TypeError", "list indices must be integers"),
    "missing inputs": (json.dumps({"rows": []}).encode(), {}, "pre", "KeyError", "inputs"),
    "strings in numeric fields": (
        json.dumps({"inputs": [["a", 1, 2, 3]]}).encode(),
        {},
        "pre",
        "ValueError",
        "could not convert string to float",
    ),
    "wrong width": (
        json.dumps({"inputs": [[1.0, 2.0]]}).encode(),
        {"model": b"lr"},
        "lr",
        "StepError",
        "model 'lr' expects 4 features per row, got 2",
    ),
    "unknown model": (
        json.dumps({"inputs": [[1, 2, 3, 4]]}).encode(),
        {"model": b"svm"},
        "models",
        "RoutingError",
        "unknown model 'svm'; known models: lr, rf, vote",
    ),
}


def test_bad_messages_land_in_the_dead_letter_topic_with_their_reason(kafka, iris):
    reference, _ = iris
    bad = {name: Request({}, headers=headers, raw=raw) for name, (raw, headers, *_) in BAD.items()}
    good = [Request({"inputs": [[5.1, 3.5, 1.4, 0.2]]}, headers={"model": b"rf"}) for _ in range(5)]
    summary, _answers, dead = asyncio.run(drive(kafka, reference, [*bad.values(), *good]))
    assert summary.answered == 5 and summary.missing == 0 and summary.dead_letters == len(BAD)
    for name, (raw, _, step, error_type, reason) in BAD.items():
        record = dead[bad[name].id]
        headers = {k: v.decode() for k, v in record.headers.items()}
        assert (headers["step"], headers["error_type"]) == (step, error_type), name
        assert reason in headers["error"], name
        assert {"source_topic", "partition", "offset", "attempts"} <= headers.keys()
        assert record.value == raw and headers["source_topic"] == "iris.requests", name  # replayable, from any step


def test_an_ensemble_joins_every_event_with_one_member_slowed(kafka, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(int(time.time())))
    reference = f"{Path(__file__).parent / 'helpers.py'}:slow_ensemble_graph"
    assert load_graph(reference).name == slow_ensemble_graph().name
    requests = [Request({"inputs": [[float(i)], [float(i + 1)]]}) for i in range(60)]
    with deploy(kafka, reference, tmp_path):
        summary, answers, _dead = asyncio.run(drive(kafka, reference, requests, timeout_s=180))
    assert (summary.answered, summary.missing, summary.dead_letters) == (60, 0, 0), f"logs in {tmp_path}"
    for request in requests:
        body = answers[request.id]
        first = request.body["inputs"][0][0]
        assert body["model_name"] == "mean" and body["outputs"] == [2 * first, 2 * (first + 1)]
        assert "parameters" not in body  # both members answered, none missing
