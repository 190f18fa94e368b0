"""Fault injection on a real broker: crashed workers, a crashed join, restarts, scaling, a broker outage.

Each test sends requests at a steady rate while it injects the fault, reads every answer back
by request id and prints one line of counts (``pytest -s`` shows them): nothing may be lost;
duplicates (at-least-once) are counted and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from test_kafka_deploy import ASSIGNED, deploy

from pipeline.broker import EmbeddedKafka
from pipeline.client import Received, Request, consume, produce
from pipeline.demo import drive
from pipeline.loading import load_graph
from pipeline.plan import Plan, build_plan
from pipeline.runtime.settings import AgentSettings
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

pytestmark = pytest.mark.kafka
HELPERS = Path(__file__).parent / "helpers.py"
MAX_BATCH = AgentSettings().max_batch_size
PARTITIONS = 4  # the built-in default of every step topic


@contextlib.contextmanager
def fresh_graph_names() -> Iterator[None]:
    """Graph factories in helpers.py add this run's suffix to the name: topics and groups start empty."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMSERVE_TEST_RUN", uuid.uuid4().hex[:8])
        yield


@pytest.fixture(autouse=True)
def _fresh_graph_names() -> Iterator[None]:
    with fresh_graph_names():
        yield


def start(bootstrap: str, factory: str, logs: Path, extra: dict[str, int] | None = None) -> Supervisor:
    """Deploy ``tests/helpers.py:<factory>`` as worker processes and wait until it answers."""
    workers = deploy(bootstrap, f"{HELPERS}:{factory}", logs, extra)
    try:
        asyncio.run(warm_up(bootstrap, workers.plan))
    except BaseException:
        workers.stop()
        raise
    return workers


@dataclass
class Tally:
    lost: int
    duplicates: int
    dead_letters: int


class Traffic:
    """Requests produced at a steady rate; every answer and dead letter read back by request id.

    Request ``i`` has key ``k<i>`` and input ``[[i]]``; every graph here answers ``[2 i]``.
    """

    def __init__(self, bootstrap: str, plan: Plan, count: int, *, rate: float | None) -> None:
        self.bootstrap, self.plan, self.rate = bootstrap, plan, rate
        self.requests = [Request({"inputs": [[float(i)]]}, key=f"k{i}".encode()) for i in range(count)]
        self.sent_at: dict[str, float] = {}
        self.answers: dict[str, list[Received]] = defaultdict(list)
        self.dead: dict[str, list[Received]] = defaultdict(list)
        self.figures: dict[str, object] = {}  # what the test measured; check() prints them
        self._complete = asyncio.Event()

    async def __aenter__(self) -> Traffic:
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def send(self, requests: list[Request] | None = None) -> asyncio.Task:
        """Produce ``requests`` (default: all) in the background at the steady rate."""
        requests = self.requests if requests is None else requests
        on_sent = lambda request, at: self.sent_at.__setitem__(request.id, at)  # noqa: E731
        return asyncio.create_task(produce(self.bootstrap, self.plan.source, requests, rate=self.rate, on_sent=on_sent))

    async def sent(self, count: int) -> None:
        """Return once ``count`` requests have been sent."""
        while len(self.sent_at) < count:
            await asyncio.sleep(0.01)

    def unanswered(self) -> int:
        return len(self.sent_at.keys() - self.answers.keys())

    async def settle(self, timeout_s: float, *, quiet_s: float = 2.0) -> None:
        """Wait until every request is answered or dead-lettered (at most ``timeout_s``), then
        ``quiet_s`` more for late duplicates."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._complete.wait(), timeout_s)
        await asyncio.sleep(quiet_s)

    async def _read(self) -> None:
        ids = {request.id for request in self.requests}
        pending = set(ids)
        async for topic, record in consume(self.bootstrap, [self.plan.sink, self.plan.dlq], timeout_s=3600):
            event_id = record.event_id
            if event_id not in ids:
                continue  # the warm-up's
            (self.dead if topic == self.plan.dlq else self.answers)[event_id].append(record)
            pending.discard(event_id)
            if not pending:
                self._complete.set()

    def check(self, label: str) -> Tally:
        """Print the counts and figures; assert that every answer is right."""
        tally = Tally(
            lost=sum(request.id not in self.answers for request in self.requests),
            duplicates=sum(len(answers) - 1 for answers in self.answers.values()),
            dead_letters=sum(map(len, self.dead.values())),
        )
        counts = {"sent": len(self.sent_at), "answered": len(self.answers), **vars(tally), **self.figures}
        shown = (
            f"{name} {value:.1f}" if isinstance(value, float) else f"{name} {value}" for name, value in counts.items()
        )
        print(f"\n[{label}]", ", ".join(shown).replace("_", " "))
        wrong = [
            request.id
            for number, request in enumerate(self.requests)
            for answer in self.answers.get(request.id, ())
            if answer.body["outputs"] != [2.0 * number]
        ]
        assert not wrong, f"{len(wrong)} wrong answers, e.g. {self.answers[wrong[0]][0].body}"
        return tally


async def warm_up(bootstrap: str, plan: Plan, timeout_s: float = 90) -> None:
    async with Traffic(bootstrap, plan, 3, rate=None) as traffic:
        await traffic.send()
        await traffic.settle(timeout_s, quiet_s=0)
    assert len(traffic.answers) == 3, f"graph {plan.graph.name} did not answer its warm-up requests"


def assignment(log: Path, agent: str) -> set[int] | None:
    """The partitions ``agent`` last logged as assigned in ``log`` (None before its first assignment)."""
    found = [m.group(2) for m in ASSIGNED.finditer(log.read_text() if log.exists() else "") if m.group(1) == agent]
    if not found:
        return None
    return {int(p.strip(" '").rsplit("[", 1)[1].rstrip("]")) for p in found[-1].split(",") if p.strip()}


def split(logs: Path, agent: str, instances: range) -> bool:
    """Whether ``instances`` of ``agent`` last logged disjoint, non-empty shares of all partitions."""
    owned = [assignment(logs / f"{agent}.{i}.log", agent) for i in instances]
    return all(owned) and sum(map(len, owned)) == PARTITIONS and set().union(*owned) == set(range(PARTITIONS))


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` every 50 ms; the seconds it took to hold."""
    started = time.perf_counter()
    while not condition():
        assert time.perf_counter() - started < timeout_s, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


def partition_of(key: bytes) -> int:
    """The partition the router's producer picks for ``key`` (Kafka's default partitioner)."""
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def test_a_killed_model_worker_loses_nothing_and_the_survivor_takes_over(kafka, tmp_path):
    workers = start(kafka, "fault_graph", tmp_path, {"double": 2})
    with workers:

        async def scenario() -> Traffic:
            await until(lambda: split(tmp_path, "double", range(2)), 30, "two double workers split the partitions")
            async with Traffic(kafka, workers.plan, 5000, rate=1000) as traffic:
                sending = traffic.send()
                await traffic.sent(2000)
                orphaned = assignment(tmp_path / "double.1.log", "double")
                killed_at = time.perf_counter()
                workers.kill("double", 1)
                takeover = await until(lambda: split(tmp_path, "double", range(1)), 30, "the survivor owns all")
                await sending
                await traffic.settle(60)
            moved = [
                r.id for r in traffic.requests if partition_of(r.key) in orphaned and traffic.sent_at[r.id] > killed_at
            ]
            answered = (answer.received_s for event_id in moved for answer in traffic.answers.get(event_id, ()))
            first = min(answered, default=float("inf"))
            traffic.figures.update({"s to survivor's assignment": takeover, "s to its next answer": first - killed_at})
            return traffic

        traffic = asyncio.run(scenario())
    tally = traffic.check("kill -9 one of two model workers")
    assert (tally.lost, tally.dead_letters) == (0, 0)
    assert tally.duplicates <= MAX_BATCH  # at most the killed worker's one batch in flight
    assert traffic.figures["s to its next answer"] < 30


@pytest.fixture(scope="module")
def killed_join(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    """The slow-join graph with its join worker killed (joins open) and restarted mid-stream."""
    logs = tmp_path_factory.mktemp("killed-join")
    with fresh_graph_names(), start(kafka, "slow_join_graph", logs) as workers:

        async def scenario() -> Traffic:
            async with Traffic(kafka, workers.plan, 1000, rate=200) as traffic:
                sending = traffic.send()
                await traffic.sent(500)  # the slow member answers every 0.5 s: joins wait for it
                traffic.figures["unanswered at the kill"] = traffic.unanswered()
                workers.kill("mean.join")
                await asyncio.sleep(1)
                workers.start("mean.join")
                await sending
                await traffic.settle(90, quiet_s=8)  # > the join's 5 s timeout: a half-redelivered join shows
            return traffic

        return asyncio.run(scenario())


def test_a_killed_join_worker_restarted_answers_every_event(killed_join):
    tally = killed_join.check("kill -9 the join worker, restart it")
    assert tally.lost == 0
    deduped: dict[str, Received] = {}  # the sink-side dedupe: the first answer per event id
    for event_id, answers in killed_join.answers.items():
        deduped.setdefault(event_id, answers[0])
    assert sorted(deduped) == sorted(request.id for request in killed_join.requests)
    assert {answer.body["model_name"] for answer in deduped.values()} == {"mean"}


def test_a_killed_join_worker_restarted_dead_letters_nothing(killed_join):
    errors = Counter(r.headers.get("error", b"").decode()[:80] for rs in killed_join.dead.values() for r in rs)
    assert not errors, f"{sum(errors.values())} dead letters of answered events: {errors.most_common(2)}"


def test_stopping_and_restarting_every_worker_resumes_from_committed_offsets(kafka, tmp_path):
    workers = start(kafka, "fault_graph", tmp_path)
    with workers:

        async def scenario() -> Traffic:
            async with Traffic(kafka, workers.plan, 3000, rate=1000) as traffic:
                sending = traffic.send()
                await traffic.sent(1500)
                stopping = time.perf_counter()
                traffic.figures["exit codes"] = set((await asyncio.to_thread(workers.stop)).values())
                traffic.figures["s to stop"] = time.perf_counter() - stopping
                workers.start_all()
                await sending
                await traffic.settle(60)
            return traffic

        traffic = asyncio.run(scenario())
    tally = traffic.check("SIGTERM and restart every worker")
    assert traffic.figures["exit codes"] == {0}
    assert (tally.lost, tally.duplicates, tally.dead_letters) == (0, 0, 0)  # SIGTERM drains and commits


def test_scaling_a_step_up_to_three_workers_and_back_loses_nothing(kafka, tmp_path):
    workers = start(kafka, "fault_graph", tmp_path)
    with workers:

        async def scenario() -> Traffic:
            async with Traffic(kafka, workers.plan, 10_000, rate=1000) as traffic:
                sending = traffic.send()
                await traffic.sent(1000)
                workers.start("double", 1)
                workers.start("double", 2)
                up = await until(lambda: split(tmp_path, "double", range(3)), 30, "three double workers split")
                await traffic.sent(4000)
                traffic.figures["sent at scale-down"] = len(traffic.sent_at)
                down = time.perf_counter()
                stopping = (asyncio.to_thread(workers.terminate, "double", i) for i in (1, 2))
                traffic.figures["exit codes"] = set(await asyncio.gather(*stopping))
                await until(lambda: split(tmp_path, "double", range(1)), 30, "one double worker owns all")
                traffic.figures.update({"s to split 3 ways": up, "s back to one": time.perf_counter() - down})
                await sending
                await traffic.settle(60)
            return traffic

        traffic = asyncio.run(scenario())
    tally = traffic.check("scale 1 -> 3 -> 1 workers")
    assert traffic.figures["sent at scale-down"] < len(traffic.requests), "scaled down after the traffic ended"
    assert traffic.figures["exit codes"] == {0}
    assert (tally.lost, tally.dead_letters) == (0, 0)
    assert tally.duplicates <= 3 * MAX_BATCH  # at most one batch per worker redone in a rebalance


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The offsets ``group`` committed on each partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


def test_answers_the_broker_rejects_are_dead_lettered_and_the_worker_lives_on(kafka, tmp_path):
    graph = load_graph(f"{HELPERS}:fault_graph")  # its sink refuses every answer: max.message.bytes 100
    (tmp_path / "topics.yaml").write_text(f"topics:\n  {graph.sink}:\n    config:\n      max.message.bytes: 100\n")
    requests = [Request({"inputs": [[float(i)]]}) for i in range(20)]
    with deploy(kafka, f"{HELPERS}:fault_graph", tmp_path, config=tmp_path / "topics.yaml") as workers:
        summary, _, dead = asyncio.run(drive(kafka, f"{HELPERS}:fault_graph", requests, timeout_s=90))
        assert workers.processes["double", 0].poll() is None, "the worker died on a rejected answer"
    assert (summary.answered, summary.dead_letters, summary.missing) == (0, 20, 0)
    reasons = {
        (r.headers["error_type"].decode(), r.headers["error"].decode().split(" bytes ")[-1]) for r in dead.values()
    }
    assert reasons == {("MessageSizeTooLargeError", f"for '{graph.sink}', over the topic's max.message.bytes")}


@pytest.fixture(scope="module")
def broker_outage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Traffic, dict[str, list[str]]]:
    """A broker of its own stopped for 20 s mid-stream and restarted on its port and data dir, with
    one worker started while it is down; the traffic, and each worker's log lines."""
    logs = tmp_path_factory.mktemp("broker-outage")
    with (
        fresh_graph_names(),
        EmbeddedKafka(data_dir=logs / "kafka") as broker,
        start(broker.bootstrap, "fault_graph", logs) as workers,
    ):

        async def scenario() -> Traffic:
            async with Traffic(broker.bootstrap, workers.plan, 2000, rate=500) as traffic:
                await traffic.send(traffic.requests[:1000])
                traffic.figures["unanswered at the stop"] = traffic.unanswered()
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(10)
                workers.start("double", 1)
                await asyncio.sleep(10)
                await asyncio.to_thread(broker.start)
                back = time.perf_counter()
                await traffic.send(traffic.requests[1000:])
                await traffic.settle(90)
                await until(lambda: split(logs, "double", range(2)), 60, "the worker started in the outage joins")
                traffic.figures["s from the restart until it joined"] = time.perf_counter() - back
            return traffic

        traffic = asyncio.run(scenario())
        traffic.figures["alive after"] = sorted(
            f"{n}.{i}" for (n, i), p in workers.processes.items() if p.poll() is None
        )
        traffic.figures["exit codes"] = set(workers.stop().values())
    lines = {log.name: log.read_text().splitlines() for log in sorted(logs.glob("*.log"))}
    for name, log in lines.items():
        levels = Counter(line.split(" ")[2] for line in log if line[:2] == "20")
        print(f"\n  {name}: {len(log)} lines {dict(levels)}", *[line[24:160] for line in log if "retrying" in line],
              sep="\n    ")  # fmt: skip
    return traffic, lines


def test_workers_ride_out_a_broker_outage(broker_outage):
    traffic, logs = broker_outage
    tally = traffic.check("broker down 20 s")
    assert (tally.lost, tally.dead_letters) == (0, 0)
    assert traffic.figures["alive after"] == ["double.0", "double.1", "models.0"]
    assert traffic.figures["exit codes"] == {0}
    retries = [line.rsplit(" ", 2)[-2] for line in logs["double.1.log"] if "unreachable" in line]
    assert retries[:3] == ["1", "2", "4"]  # the worker started in the outage backs off, no crash loop
    assert not any("Traceback" in line for log in logs.values() for line in log)


def test_a_worker_retrying_a_down_broker_closes_its_clients(broker_outage):
    _, logs = broker_outage
    assert not [line for line in logs["double.1.log"] if "Unclosed AIOKafka" in line]


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_run_with_workers_restarts_a_crashed_worker(kafka, tmp_path):
    reference = f"{HELPERS}:fault_graph"
    plan = build_plan(load_graph(reference))
    ensure_topics(kafka, plan)
    command = [sys.executable, "-m", "pipeline.cli", "run", reference, "--bootstrap", kafka, "--workers", "2"]
    with open(tmp_path / "supervisor.log", "wb") as log:
        supervisor = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        warm = [Request({"inputs": [[1.0]]})]
        assert asyncio.run(drive(kafka, reference, warm, timeout_s=90))[0].answered == 1
        first = _children(supervisor.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        requests = [Request({"inputs": [[float(i)]]}) for i in range(200)]
        summary, _, _ = asyncio.run(drive(kafka, reference, requests, timeout_s=90))
        assert (summary.answered, summary.missing) == (200, 0)
        # the survivor may answer all 200 before the 1 s backoff ends
        asyncio.run(until(lambda: len(_children(supervisor.pid)) == 2, 10, "worker 0 started again"))
        replaced = _children(supervisor.pid)
        assert len(replaced) == 2 and first[0] not in replaced and first[1] in replaced
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(30)
    assert code == 0, (tmp_path / "supervisor.log").read_text()[-2000:]
    assert "worker 0 of every agent exited with -9; starting it again" in (tmp_path / "supervisor.log").read_text()


def test_a_stop_during_a_restart_backoff_starts_no_worker(kafka, tmp_path):
    reference = f"{HELPERS}:fault_graph"
    ensure_topics(kafka, build_plan(load_graph(reference)))
    command = [sys.executable, "-m", "pipeline.cli", "run", reference, "--bootstrap", kafka, "--workers", "2"]
    with open(tmp_path / "supervisor.log", "wb") as log:
        supervisor = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert asyncio.run(drive(kafka, reference, [Request({"inputs": [[1.0]]})], timeout_s=90))[0].answered == 1
        log = tmp_path / "supervisor.log"
        asyncio.run(until(lambda: log.read_text().count("consuming") == 4, 30, "two workers of two agents"))
        os.kill(_children(supervisor.pid)[0], signal.SIGKILL)
        asyncio.run(until(lambda: "starting it again" in log.read_text(), 30, "the supervisor saw the kill"))
        supervisor.send_signal(signal.SIGTERM)  # inside the 1 s backoff
        code = supervisor.wait(10)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert code == 0, (tmp_path / "supervisor.log").read_text()[-2000:]
    assert (tmp_path / "supervisor.log").read_text().count("consuming") == 4  # none started after the stop
