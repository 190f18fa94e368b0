"""Prometheus metrics of one worker process's agents (the official client library), labelled by
graph and agent: what was consumed, emitted, filtered and dead-lettered, batch sizes, step and
end-to-end latency, commits, rebalances, joins, and consumer lag per partition."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.codec import origin_of
from pipeline.fusion import Chain
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.transport import TopicPartition
from steps.base import Step
from steps.join import Join

if TYPE_CHECKING:
    from pipeline.events import Event
    from pipeline.kafka_config import KafkaConfig
    from pipeline.plan import Plan
    from pipeline.runtime.transport import Outgoing
    from steps.base import Outcome

__all__ = ["LAG_INTERVAL_S", "Metrics"]

logger = logging.getLogger(__name__)
LAG_INTERVAL_S = 5.0
LABELS = ("graph", "agent")
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics(Sensors):
    """The sensors that keep the metrics of ``plan``'s agents in ``registry`` (a new one by default)."""

    def __init__(self, plan: Plan, registry: CollectorRegistry | None = None) -> None:
        self.graph, self.sink, self.dlq = plan.graph.name, plan.sink, plan.dlq
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "streamserve_events_consumed", "Records read from the agent's input topic", LABELS, registry=r
        )
        self.emitted = Counter(
            "streamserve_events_emitted",
            "Records sent on: to the next steps or the sink (dead letters apart)",
            LABELS,
            registry=r,
        )
        self.filtered = Counter(
            "streamserve_events_filtered", "Events the step dropped (a filter, a duplicate)", LABELS, registry=r
        )
        self.dead = Counter(
            "streamserve_dead_letters",
            "Events sent to the dead-letter topic, by error type",
            (*LABELS, "error_type"),
            registry=r,
        )
        self.batch = Histogram(
            "streamserve_batch_size", "Records per consumed batch", LABELS, buckets=BATCH_BUCKETS, registry=r
        )
        self.step = Histogram(
            "streamserve_step_duration_seconds",
            "Time the step takes on one batch",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "streamserve_end_to_end_latency_seconds",
            "From the request's timestamp on the input topic to its answer being sent, at the agent that answers",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit = Histogram(
            "streamserve_commit_duration_seconds",
            "Time an offset commit takes",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_failures = Counter(
            "streamserve_commit_failures", "Failed commits or deliveries (the records come again)", LABELS, registry=r
        )
        self.rebalances = Counter(
            "streamserve_rebalances", "Partition assignments this member received", LABELS, registry=r
        )
        self.partitions = Gauge("streamserve_assigned_partitions", "Partitions this member owns", LABELS, registry=r)
        self.join_timeouts = Counter(
            "streamserve_join_timeouts",
            "Joins closed by their timeout (a partial result or a failure)",
            LABELS,
            registry=r,
        )
        self.lag = Gauge(
            "streamserve_consumer_lag",
            "Records of an owned partition not yet committed by the agent's group (end offset less committed offset)",
            (*LABELS, "topic", "partition"),
            registry=r,
        )
        self.up = Gauge("streamserve_agent_up", "1 while the agent polls its input topic", LABELS, registry=r)
        heads = {a.name: _head(a.step) for a in plan.agents}
        self._holds = {name: type(step).held is not Step.held for name, step in heads.items()}
        r.register(_JoinsOpen(self.graph, {name: step for name, step in heads.items() if isinstance(step, Join)}))
        self.owned: dict[str, set[TopicPartition]] = {}
        self._lagging: set[tuple[str, str, str]] = set()

    # -- the loop's hooks -----------------------------------------------------------------
    def batch_consumed(self, agent: str, records: int) -> None:
        self.consumed.labels(self.graph, agent).inc(records)
        self.batch.labels(self.graph, agent).observe(records)

    def step_done(self, agent: str, events: int, outcomes: int, seconds: float) -> None:
        self.step.labels(self.graph, agent).observe(seconds)

    def stepped(self, agent: str, events: list[Event], outcomes: list[Outcome]) -> None:
        if self._holds.get(agent, True):
            return  # a join holds its parts: no outcome is no filter
        answered = {outcome.event.uid for outcome in outcomes}
        dropped = sum(1 for event in events if event.uid not in answered)
        if dropped:
            self.filtered.labels(self.graph, agent).inc(dropped)

    def expired(self, agent: str, outcomes: list[Outcome]) -> None:
        self.join_timeouts.labels(self.graph, agent).inc(len(outcomes))

    def dead_lettered(self, agent: str, error_type: str) -> None:
        self.dead.labels(self.graph, agent, error_type).inc()

    def sending(self, agent: str, records: list[Outgoing]) -> None:
        emitted, now_ms, latency = 0, time.time() * 1000, self.latency.labels(self.graph, agent)
        for record in records:
            if record.topic == self.dlq:
                continue
            emitted += 1
            origin = origin_of(record.source) if record.topic == self.sink and record.source is not None else None
            if origin is not None and origin.timestamp > 0:
                latency.observe(max(0.0, now_ms - origin.timestamp) / 1000)
        if emitted:
            self.emitted.labels(self.graph, agent).inc(emitted)

    def committed(self, agent: str, offsets: dict[TopicPartition, int], seconds: float) -> None:
        self.commit.labels(self.graph, agent).observe(seconds)

    def commit_failed(self, agent: str, error: BaseException) -> None:
        self.commit_failures.labels(self.graph, agent).inc()

    def assigned(self, agent: str, partitions: set[TopicPartition]) -> None:
        self.rebalances.labels(self.graph, agent).inc()
        owned = self.owned.setdefault(agent, set())
        owned.update(partitions)
        self.partitions.labels(self.graph, agent).set(len(owned))

    def revoked(self, agent: str, partitions: set[TopicPartition]) -> None:
        owned = self.owned.setdefault(agent, set())
        owned.difference_update(partitions)
        self.partitions.labels(self.graph, agent).set(len(owned))

    def started(self, agent: str) -> None:
        self.up.labels(self.graph, agent).set(1)
        self.partitions.labels(self.graph, agent).set(len(self.owned.get(agent, ())))

    def stopped(self, agent: str) -> None:
        self.up.labels(self.graph, agent).set(0)
        self.owned.pop(agent, None)
        self.partitions.labels(self.graph, agent).set(0)

    # -- consumer lag ---------------------------------------------------------------------
    async def watch_lag(self, bootstrap: str, config: KafkaConfig, interval_s: float = LAG_INTERVAL_S) -> None:
        """Every ``interval_s``, set the lag of each owned partition from the cluster (the group's
        committed offset against the partition's end offset), until cancelled."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        options = config.client_options()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamserve-metrics", **options)
        offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="streamserve-metrics", **options)
        started = False
        try:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    if not started:
                        await admin.start()
                        await offsets.start()
                        started = True
                    await self._measure_lag(admin, offsets)
                except Exception as exc:  # metrics must never stop the agents
                    logger.debug("consumer lag not measured: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                await offsets.stop()
            with contextlib.suppress(Exception):
                await admin.close()

    async def _measure_lag(self, admin: object, offsets: object) -> None:
        from aiokafka import TopicPartition as KafkaPartition

        seen: set[tuple[str, str, str]] = set()
        for agent, owned in list(self.owned.items()):
            partitions = [KafkaPartition(topic, partition) for topic, partition in sorted(owned)]
            if not partitions:
                continue
            committed = await admin.list_consumer_group_offsets(f"{self.graph}.{agent}", partitions=partitions)  # type: ignore[attr-defined]
            ends = await offsets.end_offsets(partitions)  # type: ignore[attr-defined]
            starts = await offsets.beginning_offsets(partitions)  # type: ignore[attr-defined]
            for tp in partitions:
                mark = committed.get(tp)
                done = mark.offset if mark is not None and mark.offset >= 0 else starts[tp]
                labels = (agent, tp.topic, str(tp.partition))
                self.lag.labels(self.graph, *labels).set(max(0, ends[tp] - done))
                seen.add(labels)
        for labels in self._lagging - seen:  # partitions given up: no stale series
            with contextlib.suppress(KeyError):
                self.lag.remove(self.graph, *labels)
        self._lagging = seen


def _head(step: Step) -> Step:
    """The step an agent runs first: itself, or the first of a fused chain."""
    while isinstance(step, Chain):
        step = step.first
    return step


class _JoinsOpen(Collector):
    """``streamserve_join_open``: events a join agent holds open now, read at each scrape."""

    def __init__(self, graph: str, joins: dict[str, Join]) -> None:
        self.graph, self.joins = graph, joins

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("streamserve_join_open", "Events a join waits on for more parts", labels=LABELS)
        for agent, join in self.joins.items():
            family.add_metric([self.graph, agent], _open_count(join))
        yield family


def _open_count(join: Join) -> int:
    """How many events ``join`` holds open (``Join.open_count`` where the step offers it)."""
    count = getattr(join, "open_count", None)
    if count is None:
        count = len(getattr(join, "_open", ()))
    return int(count() if callable(count) else count)
