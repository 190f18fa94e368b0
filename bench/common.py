"""What the benchmarks share: a broker, fresh names, deployments, load, percentiles, tables and results.

Scripts import it as ``common`` (``bench/`` is their directory). Every figure comes from one of two
loads, both through a real broker:

- ``backlog``: N requests waiting in the source topic, then drained as fast as the deployment goes
  (the entry stage is stopped while they are produced, or the producer simply outruns a slow stage);
- ``run_load``: N requests at a steady rate (or open loop), each timed from the produce call to the
  moment its prediction is read.

Throughput is measured on the sink records' Kafka timestamps over the middle 80% of the answers, so
worker start-up, group joins and the last stragglers do not count; the overall rate is also kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))

import graphs  # noqa: E402  (bench/graphs.py, after the path set-up above)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from processes import Processes  # noqa: E402  (bench/processes.py)

from pipeline.broker import KAFKA_VERSION, EmbeddedKafka  # noqa: E402
from pipeline.client import Request, consume, produce  # noqa: E402
from pipeline.demo import make_requests  # noqa: E402
from pipeline.plan import build_plan  # noqa: E402
from pipeline.topics import TopicConfig, create_topics, ensure_topics  # noqa: E402

# aiokafka warns while fresh topics elect their leaders and retries on its own: keep the tables readable.
logging.getLogger("aiokafka").setLevel(logging.ERROR)

# -- command line, names, broker ------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes: ``--quick`` and ``--bootstrap``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        help="an existing Kafka (default: $KAFKA_BOOTSTRAP_SERVERS, else start the embedded Apache Kafka)",
    )
    return parser


def fresh_name(prefix: str) -> str:
    """A graph or topic prefix never used before: ``<prefix>-<HHMMSS>-<6 hex>``."""
    return f"{prefix}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int | None  # None for an external cluster


_broker_kind = {"kafka": f"Apache Kafka {KAFKA_VERSION} (embedded)"}


@contextlib.contextmanager
def kafka(bootstrap: str | None) -> Iterator[Broker]:
    """The broker at ``bootstrap``, else a fresh embedded Apache Kafka for the duration."""
    if bootstrap:
        _broker_kind["kafka"] = f"external ({bootstrap})"
        yield Broker(bootstrap, None)
        return
    print("starting the embedded Apache Kafka broker ...", flush=True)
    with EmbeddedKafka() as broker:
        print(f"warming the broker up for {BROKER_WARM_UP_S:.0f} s ...", flush=True)
        warm_broker(broker.bootstrap, BROKER_WARM_UP_S)
        yield Broker(broker.bootstrap, broker.pid)


BROKER_WARM_UP_S = 20.0


def warm_broker(bootstrap: str, seconds: float, rate: float = 2000) -> None:
    """Small produce, fetch and commit requests at ``rate`` records/s for ``seconds`` on a scratch topic.

    A fresh broker gets cheaper over its first minute of traffic (its JVM compiling the request paths):
    measured here at 1,000 events/s, its CPU fell from 108% to 62% of a core and the iris lr path's p50
    from 123 to 50 ms over three consecutive runs, which favoured whichever system a script measured later.
    """
    topic = fresh_name("warm-up")
    create(bootstrap, [topic])

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=topic, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await producer.start()
        await consumer.start()
        deadline = time.monotonic() + seconds

        async def read() -> None:
            while time.monotonic() < deadline:
                if await consumer.getmany(timeout_ms=100):
                    await consumer.commit()

        reader = asyncio.create_task(read())
        sent, start = 0, time.monotonic()
        while time.monotonic() < deadline:
            await producer.send(topic, b"x" * 100, key=str(sent % 16).encode())
            sent += 1
            if sent % 10 == 0:
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        await reader
        await producer.stop()
        await consumer.stop()

    asyncio.run(run())


def create(bootstrap: str, topics: Sequence[str], partitions: int = 4) -> None:
    """Create ``topics`` with ``partitions`` each (the deployments' default too)."""
    asyncio.run(create_topics(bootstrap, [TopicConfig(name, partitions, 1) for name in topics]))


# -- what load goes through ----------------------------------------------------------------


class Target:
    """Worker processes between a source and a sink topic; the entry stage can be stopped and restarted."""

    bootstrap: str
    source: str
    sink: str
    dlq: str | None
    entry: str  # the worker name that reads the source topic
    workers: Processes
    label: str

    def pids(self) -> dict[str, int]:
        """``{"<worker>.<instance>": pid}`` of the running workers."""
        return {f"{name}.{instance}": p.pid for (name, instance), p in self.workers.processes.items()}

    def pause_entry(self) -> list[int]:
        """Stop (SIGTERM: commit and leave the group) every instance of the entry stage; their numbers."""
        instances = sorted(i for name, i in self.workers.processes if name == self.entry)
        for instance in instances:
            self.workers.terminate(self.entry, instance, timeout=30)
        return instances

    def exited(self) -> list[str]:
        """The workers that exited on their own (a crash), as ``<worker>.<instance>``."""
        return [f"{name}.{instance}" for (name, instance), p in self.workers.processes.items() if p.poll() is not None]

    def resume_entry(self, instances: Sequence[int]) -> None:
        for instance in instances:
            self.workers.start(self.entry, instance)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.workers.stop()


class Deployment(Target):
    """A graph of ``bench/graphs.py`` deployed as worker processes under a fresh name.

    ``agents`` picks the agents to run (default all), ``instances`` the workers per agent.
    ``settings`` (AgentSettings overrides, e.g. ``{"linger_ms": 5}``) and ``tree`` (another checkout of
    streamserve, whose own ``bench/graphs.py``, ``pipeline`` and ``steps`` then run, with PYTHONPATH at
    it) start the workers through ``bench/worker.py``; otherwise through ``streamserve run``.
    Topics get the built-in defaults (4 partitions); worker logs go to ``bench/results/logs/<name>``.
    """

    def __init__(
        self,
        bootstrap: str,
        factory: str,
        *,
        agents: Sequence[str] | None = None,
        instances: int = 1,
        tree: Path | None = None,
        settings: dict[str, Any] | None = None,
        fuse: bool = False,
    ) -> None:
        self.bootstrap, self.instances, self.fuse = bootstrap, instances, fuse
        self.tree, self.settings = (tree.resolve() if tree else None), dict(settings or {})
        self.name = fresh_name(factory.removesuffix("_graph"))
        self.graph = getattr(graphs, factory)(self.name)
        self.plan = build_plan(self.graph, fuse=fuse)
        self.agents = list(agents or [agent.name for agent in self.plan.agents])
        self.source, self.sink, self.dlq = self.plan.source, self.plan.sink, self.plan.dlq
        self.entry = next(agent.name for agent in self.plan.agents if agent.input == self.source)
        fused = ", fused" if fuse else ""
        self.label = f"streamserve {factory}{fused} ({', '.join(self.agents)}; {instances} worker(s) each)"
        if self.tree:
            self.label += f" @ {checkout(self.tree)}"
        if self.settings:
            self.label += " [" + ", ".join(f"{key}={value}" for key, value in self.settings.items()) + "]"
        self.reference = f"{(self.tree or ROOT) / 'bench' / 'graphs.py'}:{factory}"
        env = {graphs.GRAPH_ENV: self.name, **({"PYTHONPATH": str(self.tree)} if self.tree else {})}
        self.workers = Processes(self._worker_command, RESULTS / "logs" / self.name, env=env, cwd=self.tree or ROOT)

    def _worker_command(self, name: str, instance: int) -> list[str]:
        """``streamserve run`` for one agent; bench/worker.py with settings or another checkout."""
        where = ["--bootstrap", self.bootstrap, "--instance", str(instance), *(["--fuse"] if self.fuse else [])]
        if self.tree is None and not self.settings:
            return [sys.executable, "-m", "pipeline.cli", "run", self.reference, "--step", name, *where]
        setting = ",".join(f"{key}={value}" for key, value in self.settings.items())
        command = [sys.executable, str(BENCH / "worker.py"), self.reference, "--step", name, *where]
        return [*command, "--set", setting, "--tree", str(self.tree or ROOT)]

    def group(self, agent: str) -> str:
        """The consumer group of ``agent`` (``<graph>.<agent>``)."""
        return f"{self.plan.graph.name}.{agent}"

    def _create_topics(self) -> None:
        if self.tree is None:
            ensure_topics(self.bootstrap, build_plan(self.graph))  # every topic, fused or not
            return
        # The other checkout creates its own topics, as its deployments would.
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "topics", "create", self.reference, "--bootstrap", self.bootstrap],
            cwd=self.tree,
            env=self.workers.env,
            capture_output=True,
            text=True,
        )
        missing = [topic for topic in (self.source, self.sink) if topic not in done.stdout]
        if done.returncode != 0 or missing:
            raise RuntimeError(
                f"{self.label}: `streamserve topics create` in {self.tree} failed (exit {done.returncode}, "
                f"topics {missing} not created): {done.stderr.strip()[-500:]}"
            )

    def __enter__(self) -> Deployment:
        self._create_topics()
        for name in self.agents:
            for instance in range(self.instances):
                self.workers.start(name, instance)
        return self


def checkout(tree: Path) -> str:
    """``"<short commit>[+changes] (<path>)"`` of a git checkout ("+changes": pipeline/ or steps/ differ
    from that commit), or its path alone."""
    git = ["git", "-C", str(tree)]
    done = subprocess.run([*git, "log", "-1", "--format=%h"], capture_output=True, text=True)
    commit = done.stdout.strip()
    if done.returncode != 0 or not commit:
        return str(tree)
    changed = subprocess.run([*git, "status", "--porcelain", "--", "pipeline", "steps"], capture_output=True, text=True)
    return f"{commit}{'+changes' if changed.stdout.strip() else ''} ({tree})"


def wait_for_group(bootstrap: str, group: str, members: int, timeout_s: float = 60) -> None:
    """Block until consumer ``group`` is Stable with ``members`` members (no rebalance left to come)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def poll() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                described = await admin.describe_consumer_groups([group])
                for response in described:
                    for entry in response.groups:
                        _, _, state, _, _, group_members, *_ = entry
                        if state == "Stable" and len(group_members) == members:
                            return
                await asyncio.sleep(0.2)
            raise RuntimeError(f"consumer group {group!r} did not reach {members} stable members in {timeout_s} s")
        finally:
            await admin.close()

    asyncio.run(poll())


# -- requests -------------------------------------------------------------------------------


def iris_requests(count: int, *, model: str | None = None, seed: int = 7) -> list[Request]:
    """``count`` well-formed iris requests of 1-3 rows (the demo's), for ``model`` or spread over lr/rf/vote."""
    requests = make_requests(count, bad_every=0, seed=seed)
    if model is not None:
        for request in requests:
            request.headers["model"] = model.encode()
    return requests


def row_requests(count: int, width: int, *, seed: int = 7) -> list[Request]:
    """``count`` requests of one random row of ``width`` features each."""
    import numpy as np

    rows = np.random.default_rng(seed).normal(size=(count, width)).round(4).tolist()
    return [Request({"inputs": [row]}) for row in rows]


# -- load ------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one load produced: answers by the sink timestamps and latencies."""

    sent: int
    answered: int = 0
    dead: int = 0
    produce_s: float = 0.0  # how long producing took
    latencies_s: list[float] = field(default_factory=list)  # produce call -> answer read
    out_ms: list[int] = field(default_factory=list)  # Kafka timestamps of the answers
    start: float = 0.0  # perf_counter when the deployment could start answering
    end: float = 0.0  # perf_counter of the last answer read

    @property
    def missing(self) -> int:
        return self.sent - self.answered - self.dead

    def steady_rate(self) -> float:
        """Answers per second between the 10th and 90th percentile of the answers' timestamps."""
        stamps = sorted(self.out_ms)
        if len(stamps) < 10:
            return float("nan")
        low, high = len(stamps) // 10, len(stamps) * 9 // 10 - 1
        span_s = (stamps[high] - stamps[low]) / 1000
        return (high - low) / span_s if span_s > 0 else float("nan")

    def overall_rate(self) -> float:
        """Answers per second from the moment the deployment could start to the last answer."""
        span = self.end - self.start
        return self.answered / span if span > 0 else float("nan")

    def send_rate(self) -> float:
        return self.sent / self.produce_s if self.produce_s > 0 else float("nan")

    def latency_ms(self) -> dict[str, float]:
        return {name: value * 1000 for name, value in percentiles(self.latencies_s).items()}

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the JSON results."""
        return {
            "sent": self.sent,
            "answered": self.answered,
            "dead_letters": self.dead,
            "missing": self.missing,
            "steady_events_per_s": self.steady_rate(),
            "overall_events_per_s": self.overall_rate(),
            "send_events_per_s": self.send_rate(),
            "latency_ms": self.latency_ms(),
        }


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ..., "max": ...}`` (nearest rank); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return {**{f"p{p}": float("nan") for p in points}, "max": float("nan")}
    result = {f"p{p}": ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))] for p in points}
    return {**result, "max": ordered[-1]}


def answer_id(record: Any) -> str:
    """The request id an output record answers: its ``id`` header, else its key."""
    raw = record.headers.get("id") or record.key or b""
    return raw.decode(errors="replace")


async def _load(
    target: Target,
    requests: Sequence[Request],
    *,
    rate: float | None,
    timeout_s: float,
    before_produce: Callable[[], None] | None = None,
    after_produce: Callable[[], None] | None = None,
    answer_id: Callable[[Any], str] = answer_id,
) -> Run:
    run = Run(len(requests))
    expected = {request.id for request in requests}
    sent_at: dict[str, float] = {}
    seen: set[str] = set()
    topics = [target.sink] + ([target.dlq] if target.dlq else [])

    async def read() -> None:
        def crashed() -> bool:  # checked between polls: a dead worker ends the wait
            return bool(target.exited())

        async for topic, record in consume(target.bootstrap, topics, timeout_s=timeout_s, until=crashed):
            event_id = answer_id(record)
            if event_id not in expected or event_id in seen:
                continue
            seen.add(event_id)
            if topic == target.dlq:
                run.dead += 1
            else:
                run.answered += 1
                run.out_ms.append(record.timestamp_ms)
                run.latencies_s.append(record.received_s - sent_at.get(event_id, record.received_s))
                run.end = record.received_s
            if len(seen) >= len(expected):
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.5)  # the reader reads from the start anyway; this only keeps its start-up apart
    if before_produce is not None:
        before_produce()
    start = time.perf_counter()
    await produce(
        target.bootstrap, target.source, requests, rate=rate, on_sent=lambda r, t: sent_at.__setitem__(r.id, t)
    )
    run.produce_s = time.perf_counter() - start
    run.start = start
    if after_produce is not None:
        run.start = time.perf_counter()
        after_produce()
    await reader
    if target.exited():
        raise RuntimeError(
            f"{target.label}: worker(s) {', '.join(target.exited())} exited; logs in {target.workers.log_dir}"
        )
    if run.missing:
        print(f"  warning: {run.missing} of {run.sent} requests unanswered after {timeout_s:.0f} s", flush=True)
    return run


def timeout_for(count: int, slowest_rate: float = 200) -> float:
    """A generous bound for ``count`` requests: a minute plus ``count`` at ``slowest_rate`` per second."""
    return 60 + count / slowest_rate


def run_load(target: Target, requests: Sequence[Request], *, rate: float | None = None, **kwargs: Any) -> Run:
    """Send ``requests`` at ``rate`` per second (open loop when None) and collect every answer."""
    return asyncio.run(_load(target, requests, rate=rate, timeout_s=timeout_for(len(requests)), **kwargs))


def backlog(target: Target, requests: Sequence[Request], *, pause: bool = True, **kwargs: Any) -> Run:
    """Drain ``requests`` as a backlog: produced while the entry stage is stopped (``pause``), then let go.

    Without ``pause`` the requests are produced as fast as possible while the workers run, which is a
    backlog too where the producer outruns the deployment many times over (a heavy model).
    """
    if not pause:
        return run_load(target, requests, **kwargs)
    stopped: list[int] = []
    return asyncio.run(
        _load(
            target,
            requests,
            rate=None,
            timeout_s=timeout_for(len(requests)),
            before_produce=lambda: stopped.extend(target.pause_entry()),
            after_produce=lambda: target.resume_entry(stopped),
            **kwargs,
        )
    )


def warm_up(target: Target, requests: Sequence[Request], timeout_s: float = 120, **kwargs: Any) -> None:
    """Send a few requests and wait for all answers: workers started, models loaded, groups joined."""
    run = asyncio.run(_load(target, requests, rate=None, timeout_s=timeout_s, **kwargs))
    if run.answered != run.sent:
        logs = getattr(target.workers, "log_dir", None)
        raise RuntimeError(
            f"{target.label}: {run.answered} of {run.sent} warm-up requests answered in {timeout_s:.0f} s "
            f"({run.dead} dead letters); worker logs in {logs}"
        )


# -- tables and results ----------------------------------------------------------------------


@dataclass
class Table:
    """A titled table of already formatted cells: printed by the script, rendered by run_all."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append([str(cell) for cell in cells])

    def text(self) -> str:
        widths = [max(len(str(c)) for c in column) for column in zip(self.headers, *self.rows)]
        lines = [self.title, "  ".join(h.ljust(w) for h, w in zip(self.headers, widths))]
        lines += [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in self.rows
        ]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def print(self) -> None:
        print("\n" + self.text(), flush=True)


def num(value: float, digits: int = 0) -> str:
    """``1,234`` / ``12.3``; ``-`` for NaN."""
    return "-" if value != value else f"{value:,.{digits}f}"


def environment() -> dict[str, Any]:
    """Machine and library versions, for the results."""
    import aiokafka
    import msgpack
    import numpy
    import sklearn

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), 0
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        **_broker_kind,
        "aiokafka": aiokafka.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def save(name: str, args: argparse.Namespace, tables: Sequence[Table], **data: Any) -> Path:
    """Write ``bench/results/<name>.json``: command, date, environment, tables and raw figures."""
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])
    payload = {
        "benchmark": name,
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(getattr(args, "quick", False)),
        "environment": environment(),
        "tables": [vars(table) for table in tables],
        **data,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {out.relative_to(ROOT)}", flush=True)
    return out
