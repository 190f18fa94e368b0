"""The delivery loop of one agent: consume a batch -> decode -> step -> route -> send -> checkpoint.

The same loop runs every agent of a deployment (over Kafka) and of the mock server (over
memory). No record can stop it: a record that cannot be decoded, an event the step rejects,
an output that cannot be encoded or sent are dead-lettered; a broker failure makes it read
again from the last commit after a backoff; anything else dead-letters the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pipeline.errors import CodecError, StepError, TransportError
from pipeline.events import ErrorRecord, Event
from pipeline.plan import DEAD_LETTER, Agent, Plan, route
from pipeline.runtime.checkpoint import Checkpoint
from pipeline.runtime.deadletter import DeadLetters
from pipeline.runtime.executor import Executor
from pipeline.runtime.sender import Sender
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.settings import AgentSettings
from pipeline.runtime.transport import Outgoing, Record, TopicPartition, Transport, Unreadable
from pipeline.runtime.wire import BytesWire, Wire
from steps.base import Outcome, Step

logger = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 15.0  # the longest a stop waits on the broker
MAX_BACKOFF_S = 30.0


class AgentLoop:
    """Runs one :class:`pipeline.plan.Agent` over a transport until stopped.

    ``wire`` turns records into events and back (bytes by default); ``inline`` is for a
    transport that never waits (the mock server's): steps run inline and nothing runs beside
    a batch, so no lock is taken;
    ``commit_interval_ms`` of the settings is how often offsets are committed (0: every batch;
    None: never, for the mock server).
    """

    def __init__(
        self,
        plan: Plan,
        agent: Agent,
        transport: Transport,
        *,
        settings: AgentSettings | None = None,
        wire: Wire | None = None,
        sensors: Sensors | None = None,
        inline: bool = False,
    ) -> None:
        self.plan, self.agent, self.transport = plan, agent, transport
        self.settings = s = settings or AgentSettings()
        self.group = f"{plan.graph.name}.{agent.name}"
        self.sensors = sensors or Sensors()
        self._sensing = sensors is not None  # the mock server's default: nothing to report to
        self._expires = type(agent.step).expire is not Step.expire
        self.wire = wire or BytesWire(plan.source, plan.sink, plan.id_keyed_topics)
        self.executor = Executor(agent.step, threads=not inline)
        self.dead_letters = DeadLetters(plan.dlq, plan.source, agent.name, self.sensors, plan.graph.on_error)
        self.sender = Sender(transport, self._too_large, batch_bytes=s.batch_bytes, max_request_size=s.max_request_size)
        self.checkpoint = Checkpoint(
            transport,
            self.sender,
            agent.step,
            name=agent.name,
            group=self.group,
            exactly_once=plan.graph.guarantee == "exactly_once",
            commit_interval_s=None if s.commit_interval_ms is None else s.commit_interval_ms / 1000,
            sensors=self.sensors,
        )
        self.inline = inline
        self._lock: asyncio.Lock | contextlib.AbstractAsyncContextManager = (
            contextlib.nullcontext() if inline else asyncio.Lock()
        )
        self._backoff = 0.0
        self._rewind_due = False
        self.processed = 0

    # -- life cycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Join the agent's group on its input topic (the step is loaded by its owner)."""
        await self.transport.start(self.agent.input, self.group, self)

    async def run(self, stopping: asyncio.Event) -> None:
        """Start, then consume and process until ``stopping`` is set; commit and leave."""
        await self.start()
        self.sensors.started(self.agent.name)
        logger.info("agent %s consuming %s as group %s", self.agent.name, self.agent.input, self.group)
        try:
            while not stopping.is_set():
                await self.poll_once()
        except BaseException:  # a fault of ours, or cancelled mid-batch: what was read may be half sent
            self._forget_uncommitted()
            raise
        finally:
            self.sensors.stopped(self.agent.name)
            await self.close()

    async def close(self) -> None:
        """Commit what is safe, leave the group; bounded, so a vanished broker cannot hold a stop."""
        try:
            await asyncio.wait_for(self._shutdown(), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.warning(
                "agent %s: the broker did not answer within %.0f s of stopping; left without a final commit "
                "(the last records will be read again)",
                self.agent.name,
                CLOSE_TIMEOUT_S,
            )
        logger.info("agent %s stopped after %d events", self.agent.name, self.processed)

    async def _shutdown(self) -> None:
        if not self._rewind_due:
            try:
                async with self._lock:
                    await self.checkpoint.commit_all()
            except TransportError as exc:
                logger.warning(
                    "agent %s: final commit failed (%s); the last records will be read again", self.agent.name, exc
                )
        await self.transport.stop()

    # -- the group's partitions (the transport calls these) -----------------------------
    async def revoked(self, partitions: set[TopicPartition]) -> None:
        self.sensors.revoked(self.agent.name, partitions)
        async with self._lock:
            await self.checkpoint.revoke(partitions)

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        self.sensors.assigned(self.agent.name, partitions)
        level = logging.DEBUG if self.inline else logging.INFO  # the mock server's topics: nothing to tell
        logger.log(level, "agent %s assigned %s", self.agent.name, sorted(f"{t}[{p}]" for t, p in partitions))

    # -- one batch ---------------------------------------------------------------------
    async def poll_once(self, timeout_ms: int | None = None) -> int:
        """Read what arrived (waiting up to ``timeout_ms``) and handle it; how many records that
        was. Never raises but to stop."""
        s = self.settings
        try:
            if self._rewind_due:
                await asyncio.sleep(self._backoff)
                async with self._lock:
                    await self.checkpoint.rewind()
                self._rewind_due = False
            records = await self.transport.poll(
                s.max_batch_size, s.max_batch_time_ms if timeout_ms is None else timeout_ms
            )
            if self.inline:
                await self.handle(records)
            else:
                async with self._lock:
                    await self.handle(records)
            self._backoff = 0.0
            return sum(map(len, records.values()))
        except TransportError as exc:
            self._backoff = min(max(2 * self._backoff, 1.0), MAX_BACKOFF_S)
            self._forget_uncommitted()
            self.sensors.commit_failed(self.agent.name, exc)
            logger.warning(
                "agent %s: %s; reading again from the last commit in %.0f s", self.agent.name, exc, self._backoff
            )
            return 0

    def _forget_uncommitted(self) -> None:
        """Commit nothing read since the last commit (not on a revocation, not on the way out): it
        is read again from there, by this member after a rewind or by the partition's next owner."""
        self._rewind_due = True
        self.checkpoint.forget_uncommitted()

    async def expire_all(self) -> None:
        """Close everything the step holds now, as if its timeouts had passed (the mock server's end)."""
        async with self._lock:
            await self.handle({}, now=float("inf"))

    async def handle(self, records: dict[TopicPartition, list[Record]], now: float | None = None) -> None:
        """Process one batch of records, send every output, commit what is safe; ``now`` is the
        time the step's held work is expired at (default: the monotonic clock)."""
        try:
            events, outputs = self._decode(records)
        except Exception as exc:  # a bug of ours: each record is dead-lettered as it came
            error = self._batch_failed(records, exc)
            for partition, batch in records.items():
                if batch:
                    self.checkpoint.consumed[partition] = batch[-1].offset + 1
            events, outputs = [], [self.dead_letters.for_record(r, error) for batch in records.values() for r in batch]
        try:
            outputs += await self._step(events, now)
        except Exception as exc:  # a bug of ours must not stop the agent: each event is dead-lettered
            error = self._batch_failed(records, exc)  # as its request entered the graph (replayable)
            for event in events:
                record = ErrorRecord.from_exception(event.id, self.agent.name, error)
                outputs.append(self.dead_letters.for_event(event, record))
        if outputs and self._sensing:
            self.sensors.sent(self.agent.name, len(outputs))
            self.sensors.sending(self.agent.name, outputs)
        await self.checkpoint.send(outputs)

    def _batch_failed(self, records: dict[TopicPartition, list[Record]], exc: Exception) -> StepError:
        """Log a fault of ours on a batch; the error its dead letters carry."""
        logger.exception("agent %s failed on a batch of %d records", self.agent.name, sum(map(len, records.values())))
        return StepError(f"agent {self.agent.name!r} could not process the batch: {exc!r}")

    def _decode(self, records: dict[TopicPartition, list[Record]]) -> tuple[list[Event], list[Outgoing]]:
        """The events of a batch, and dead letters for the records that cannot be decoded."""
        outputs: list[Outgoing] = []
        events: list[Event] = []
        decode, count, consumed = self.wire.decode, 0, self.checkpoint.consumed
        for partition, batch in records.items():
            for record in batch:
                try:
                    if type(record) is Unreadable:
                        raise CodecError(record.reason)
                    event = decode(record)
                except CodecError as exc:
                    outputs.append(self.dead_letters.for_record(record, exc))
                    continue
                event.src = (record.topic, record.partition, record.offset)
                events.append(event)
            count += len(batch)
            consumed[partition] = batch[-1].offset + 1
        if count and self._sensing:
            self.sensors.batch_consumed(self.agent.name, count)
        return events, outputs

    async def _step(self, events: list[Event], now: float | None) -> list[Outgoing]:
        """Run the step on ``events`` (and expire what it holds); the records of its outcomes."""
        outcomes: list[Outcome] = []
        if events:
            if self._sensing:
                started = time.perf_counter()
                outcomes = await self.executor.run(events)
                self.sensors.step_done(self.agent.name, len(events), len(outcomes), time.perf_counter() - started)
                self.sensors.stepped(self.agent.name, events, outcomes)
            else:
                outcomes = await self.executor.run(events)
            self.processed += len(events)
        if self._expires:
            expired = self.agent.step.expire(time.monotonic() if now is None else now)
            if expired and self._sensing:
                self.sensors.expired(self.agent.name, expired)
            outcomes += expired
        self.wire.next_batch()
        outputs: list[Outgoing] = []
        for outcome in outcomes:
            self._deliver(outcome, outputs)
        return outputs

    def _deliver(self, outcome: Outcome, outputs: list[Outgoing]) -> None:
        """Add the records that carry ``outcome`` where :func:`pipeline.plan.route` sends it."""
        added = len(outputs)
        try:
            for topic, event in route(self.agent, outcome):
                if topic is DEAD_LETTER:
                    outputs.append(self.dead_letters.for_event(event, outcome.error))  # type: ignore[union-attr]
                else:
                    outputs.append(self.wire.encode(topic, event))
        except Exception as exc:  # an output the wire cannot carry
            del outputs[added:]
            event = outcome.event
            error = StepError(f"step {self.agent.name!r} produced an output that cannot be sent: {exc!s:.300}")
            outputs.append(
                self.dead_letters.for_event(event, ErrorRecord.from_exception(event.id, self.agent.name, error))
            )

    def _too_large(self, record: Outgoing, limit: str) -> Outgoing | None:
        """What replaces ``record``, over ``limit``: a dead letter for the event it answers; for a
        dead letter itself, the same letter made smaller (never a retry that would stall the agent)."""
        event = record.source
        if event is None:
            logger.warning(
                "agent %s: a dead letter of %d bytes for %s is over %s; sent without its value",
                self.agent.name,
                len(record.value or b""),
                record.topic,
                limit,
            )
            return self.dead_letters.shrunk(record)
        error = ErrorRecord(
            event.id,
            self.agent.name,
            "MessageSizeTooLargeError",
            f"step {self.agent.name!r} produced {len(record.value)} bytes for {record.topic!r}, over {limit}",
        )
        return self.dead_letters.for_event(event, error)
