"""``streamserve demo``: the iris graph deployed as separate workers on a real broker.

Produces requests (a few of them deliberately bad), reads every prediction and
dead letter, checks each prediction against the mock server, and summarises
throughput and latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.broker import EmbeddedKafka
from pipeline.client import Request, consume, produce
from pipeline.errors import DeploymentError
from pipeline.kafka_config import KafkaConfigLike
from pipeline.loading import load_graph
from pipeline.plan import build_plan
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

MODELS = ("lr", "rf", "vote")


def example_root() -> Path:
    """The source checkout holding ``examples/iris`` and ``topics.yaml``."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "examples" / "iris" / "iris.py").is_file():
            return root
    raise DeploymentError("examples/iris/iris.py not found: run the demo from a streamserve source checkout")


def example_reference() -> str:
    """``FILE:graph`` of the iris example."""
    return f"{example_root() / 'examples' / 'iris' / 'iris.py'}:graph"


def make_requests(count: int, *, bad_every: int = 100, seed: int = 7) -> list[Request]:
    """``count`` iris requests spread over the models; every ``bad_every``-th one is malformed."""
    from sklearn.datasets import load_iris

    rows = load_iris().data.tolist()
    rng = random.Random(seed)
    requests = []
    for number in range(count):
        model = MODELS[number % len(MODELS)]
        body = {"inputs": rng.sample(rows, rng.randint(1, 3))}
        request = Request(body, key=f"user-{number % 50}".encode(), headers={"model": model.encode()})
        if bad_every and number % bad_every == bad_every - 1:
            request.body["inputs"] = [[1.0, 2.0]]  # wrong width: lands in the dead-letter topic
        requests.append(request)
    return requests


@dataclass
class Summary:
    """What a run through the deployed graph produced."""

    sent: int
    answered: int
    dead_letters: int
    mismatches: int
    missing: int
    events_per_s: float
    p50_ms: float
    p99_ms: float

    def lines(self) -> list[str]:
        return [
            f"requests sent        {self.sent}",
            f"predictions          {self.answered}  (mismatches vs mock server: {self.mismatches})",
            f"dead letters         {self.dead_letters}",
            f"unanswered           {self.missing}",
            f"throughput           {self.events_per_s:,.0f} events/s",
            f"latency p50 / p99    {self.p50_ms:.1f} ms / {self.p99_ms:.1f} ms",
        ]


async def drive(
    bootstrap: str,
    reference: str,
    requests: list[Request],
    *,
    rate: float | None = None,
    timeout_s: float = 120,
    kafka_config: KafkaConfigLike = None,
) -> tuple[Summary, dict[str, Any], dict[str, Any]]:
    """Send ``requests`` through a running deployment; the summary, answers and dead letters by id
    (``kafka_config``: how to connect, see :func:`pipeline.kafka_config.resolve`)."""
    graph = load_graph(reference)
    plan = build_plan(graph)
    sent_at: dict[str, float] = {}
    answers: dict[str, Any] = {}
    latencies: list[float] = []
    dead: dict[str, Any] = {}
    expected = {request.id for request in requests}

    async def read() -> None:
        async for topic, record in consume(
            bootstrap, [plan.sink, plan.dlq], timeout_s=timeout_s, kafka_config=kafka_config
        ):
            event_id = record.event_id
            if event_id not in expected:
                continue
            if topic == plan.dlq:
                dead[event_id] = record
            elif event_id not in answers:
                answers[event_id] = record.body
                latencies.append(record.received_s - sent_at.get(event_id, record.received_s))
            if len(answers) + len(dead) >= len(expected):
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(1.0)  # let the reader join before the first record
    start = time.perf_counter()
    await produce(
        bootstrap,
        plan.source,
        requests,
        rate=rate,
        on_sent=lambda r, t: sent_at.__setitem__(r.id, t),
        kafka_config=kafka_config,
    )
    await reader
    elapsed = max(max((r.received_s for r in dead.values()), default=0), time.perf_counter()) - start
    mock = graph.to_mock_server()
    mismatches = 0
    for request in requests:
        answer = answers.get(request.id)
        if answer is None:
            continue
        model = request.headers.get("model")
        path = f"/v2/models/{model.decode()}/infer" if model else "/"
        if mock.test(path, body=dict(request.body))["outputs"] != answer["outputs"]:
            mismatches += 1
    latencies.sort()
    summary = Summary(
        sent=len(requests),
        answered=len(answers),
        dead_letters=len(dead),
        mismatches=mismatches,
        missing=len(expected) - len(answers) - len(dead),
        events_per_s=len(answers) / elapsed if elapsed else 0.0,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
    )
    return summary, answers, dead


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


def run_demo(bootstrap: str | None = None, *, count: int = 1000, rate: float | None = None) -> Summary:
    """Deploy the iris graph (embedded Kafka unless ``bootstrap``), send ``count`` requests, summarise."""
    reference = example_reference()
    plan = build_plan(load_graph(reference))
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            print("starting the embedded Apache Kafka broker ...", flush=True)
            bootstrap = stack.enter_context(EmbeddedKafka()).bootstrap
        ensure_topics(bootstrap, plan, example_root() / "topics.yaml")
        logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="streamserve-demo-"))
        workers = stack.enter_context(Supervisor(reference, bootstrap, plan=plan, log_dir=logs))
        workers.start_all()
        print(
            f"broker {bootstrap}; {len(workers.processes)} step workers: {', '.join(a.name for a in plan.agents)}",
            flush=True,
        )
        warm_up, _, _ = asyncio.run(drive(bootstrap, reference, make_requests(3, bad_every=0), timeout_s=90))
        if warm_up.answered != 3:
            raise DeploymentError(f"the deployed graph did not answer its warm-up requests; worker logs in {logs}")
        print(
            f"sending {count} requests ({'as fast as possible' if rate is None else f'{rate:.0f}/s'}) ...", flush=True
        )
        summary, answers, _ = asyncio.run(drive(bootstrap, reference, make_requests(count), rate=rate))
        for body in list(answers.values())[:3]:
            print(f"  {body['model_name']:>4} -> outputs {body['outputs']} species {body['species']}")
        print("\n".join(summary.lines()), flush=True)
        return summary
