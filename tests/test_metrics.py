"""Metrics and health of a worker: /metrics scraped during a deployment matches what was sent,
/readyz turns ready only once every agent has joined its group and consumes; the sensors behind
them, without a broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_name
from observed_graphs import observed_graph
from prometheus_client.parser import text_string_to_metric_families

from pipeline.client import Request, consume, produce
from pipeline.events import Event
from pipeline.health import Health
from pipeline.metrics import Metrics
from pipeline.plan import build_plan
from pipeline.topics import ensure_topics
from steps.base import Emit

GRAPHS = Path(__file__).parent / "observed_graphs.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics by name and labels."""
    _, text = get(port, "/metrics")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture
def worker(kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[int], Path]]:
    """`streamserve run` of the observed graph with --metrics-port: its port, the /readyz codes
    seen while it started, its log."""
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", f"m{time.time_ns()}")
    plan = build_plan(observed_graph())
    ensure_topics(kafka, plan)
    port, log = free_port(), tmp_path / "worker.log"
    command = [sys.executable, "-m", "pipeline.cli", "run", f"{GRAPHS}:observed_graph", "--bootstrap", kafka]
    with open(log, "w") as output:
        process = subprocess.Popen([*command, "--metrics-port", str(port)], stdout=output, stderr=subprocess.STDOUT)
    codes: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not codes or codes[-1] != 200:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            try:
                codes.append(get(port, "/readyz")[0])
            except OSError:  # not listening yet
                pass
            time.sleep(0.02)
        yield port, codes, log
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()


@pytest.mark.kafka
def test_metrics_count_what_was_sent_and_lag_returns_to_zero(kafka: str, worker) -> None:
    port, codes, log = worker
    plan = build_plan(observed_graph())
    assert codes[0] == 503 and codes[-1] == 200, codes  # alive before ready
    assert get(port, "/healthz")[0] == 200
    ready = json.loads(get(port, "/readyz")[1])
    assert ready == {"ready": True, "agents": dict.fromkeys([a.name for a in plan.agents], "consuming")}
    at_ready = samples(port)  # every agent owns its input topic's partitions (4 each, the sole member)
    assert [value(at_ready, "streamserve_assigned_partitions", agent=a.name) for a in plan.agents] == [4] * len(
        plan.agents
    )

    good = [Request({"inputs": [[float(n)]]}, key=f"k{n}".encode()) for n in range(12)]
    ensemble = [Request({"inputs": [[1.0]]}, headers={"model": b"ens"}) for _ in range(3)]
    skipped = [Request({"inputs": [[1.0]], "skip": True}) for _ in range(3)]
    unknown = [Request({"inputs": [[1.0]]}, headers={"model": b"nope"}) for _ in range(2)]
    sent = good + ensemble + skipped + unknown
    answered, dead = asyncio.run(_send(kafka, plan, sent, len(good + ensemble), len(unknown)))
    assert (answered, dead) == (15, 2)

    deadline = time.monotonic() + 60
    while True:  # commits and the lag measurement (every 5 s) catch up
        found = samples(port)
        lags = [v for (name, _), v in found.items() if name == "streamserve_consumer_lag"]
        if (
            len(lags) >= 4 * len(plan.agents)
            and not any(lags)
            and value(found, "streamserve_end_to_end_latency_seconds_count") >= 15
        ):
            break
        assert time.monotonic() < deadline, f"lag {lags}; log {log.read_text()[-2000:]}"
        time.sleep(0.5)
    assert value(found, "streamserve_events_consumed_total", agent="keep") == len(sent)
    assert value(found, "streamserve_events_filtered_total", agent="keep") == len(skipped)
    assert value(found, "streamserve_dead_letters_total", agent="models", error_type="RoutingError") == len(unknown)
    assert value(found, "streamserve_dead_letters_total") == len(unknown)
    assert value(found, "streamserve_events_emitted_total", agent="double") == len(good)
    assert value(found, "streamserve_events_emitted_total", agent="ens.join") == len(ensemble)
    assert value(found, "streamserve_events_consumed_total", agent="one") == len(ensemble)
    latency = "streamserve_end_to_end_latency_seconds_count"
    assert value(found, latency, agent="double") == len(good) and value(found, latency, agent="ens.join") == 3
    assert value(found, "streamserve_batch_size_sum", agent="keep") == len(sent)
    assert value(found, "streamserve_step_duration_seconds_count", agent="keep") >= 1
    assert value(found, "streamserve_commit_duration_seconds_count", agent="keep") >= 1
    assert value(found, "streamserve_rebalances_total", agent="keep") >= 1
    assert value(found, "streamserve_assigned_partitions", agent="keep") == 4
    assert value(found, "streamserve_join_open", agent="ens.join") == 0
    assert value(found, "streamserve_commit_failures_total") == 0
    assert value(found, "process_cpu_seconds_total") > 0


async def _send(kafka: str, plan, requests: list[Request], answers: int, letters: int) -> tuple[int, int]:
    wanted = {r.id for r in requests}
    seen = {plan.sink: set(), plan.dlq: set()}

    async def read() -> None:
        async for topic, record in consume(
            kafka,
            [plan.sink, plan.dlq],
            timeout_s=60,
            until=lambda: len(seen[plan.sink]) >= answers and len(seen[plan.dlq]) >= letters,
        ):
            if record.event_id in wanted:
                seen[topic].add(record.event_id)

    reader = asyncio.ensure_future(read())
    await produce(kafka, plan.source, requests)
    await reader
    return len(seen[plan.sink]), len(seen[plan.dlq])


def test_ready_once_every_agent_joined_and_polls_again_after_a_restart() -> None:
    health = Health(["a", "b"])
    assert not health.ready and health.state("a") == "starting"
    health.assigned("a", {("t", 0)})  # aiokafka assigns during the start
    health.started("a")
    health.started("b")
    assert health.state("b") == "joining" and not health.ready
    health.assigned("b", set())  # a member with no partition has joined all the same
    assert health.ready
    health.stopped("a")  # a failure: started again later
    assert not health.ready and health.state("a") == "starting"
    health.started("a")
    assert not health.ready
    health.assigned("a", {("t", 0)})
    assert health.ready


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
def test_filtered_events_and_join_metrics_without_a_broker(monkeypatch: pytest.MonkeyPatch, fuse: bool) -> None:
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", "")
    plan = build_plan(observed_graph(), fuse=fuse)  # fused, `keep` runs the router too
    metrics = Metrics(plan)
    events = [Event({"x": n}, uid=f"u{n}") for n in range(5)]
    metrics.stepped("keep", events, [Emit(events[0]), Emit(events[3])])
    metrics.stepped("ens.join", events, [])  # a join holds its parts: nothing filtered
    join = plan.agent("ens.join").step
    part = Event({"outputs": [1.0]}, uid="open-1", meta={"part": "one"})
    join.process([part])
    metrics.expired("ens.join", [Emit(part)])
    text = {(n, ls): v for (n, ls), v in _collect(metrics).items()}
    assert value(text, "streamserve_events_filtered_total", agent="keep") == 3
    assert value(text, "streamserve_events_filtered_total", agent="ens.join") == 0
    assert value(text, "streamserve_join_open", agent="ens.join") == 1
    assert value(text, "streamserve_join_timeouts_total", agent="ens.join") == 1
    assert run_name("x") == "x" and os.environ["STREAMSERVE_TEST_RUN"] == ""


def _collect(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def test_the_grafana_dashboard_reads_only_metrics_a_worker_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from prometheus_client import generate_latest

    monkeypatch.setenv("STREAMSERVE_TEST_RUN", "")
    metrics = Metrics(build_plan(observed_graph()))
    for agent in ("keep", "ens.join"):  # every labelled series once
        metrics.batch_consumed(agent, 1)
        metrics.step_done(agent, 1, 1, 0.01)
        metrics.dead_lettered(agent, "StepError")
        metrics.committed(agent, {}, 0.01)
        metrics.commit_failed(agent, RuntimeError())
        metrics.assigned(agent, {("t", 0)})
        metrics.started(agent)
        metrics.expired(agent, [])
        metrics.filtered.labels(metrics.graph, agent).inc(0)
        metrics.emitted.labels(metrics.graph, agent).inc(0)
        metrics.latency.labels(metrics.graph, agent).observe(0.1)
        metrics.lag.labels(metrics.graph, agent, "t", "0").set(0)
    served = set(re.findall(r"^(streamserve_\w+)", generate_latest(metrics.registry).decode(), re.M))
    dashboard = (Path(__file__).parent.parent / "docs" / "grafana" / "streamserve.json").read_text()
    used = set(re.findall(r"streamserve_\w+", dashboard))
    assert used and used <= served, used - served
