"""The stream agent: consume a batch -> run the step -> produce every output -> commit.

Offsets are committed (every ``commit_interval_ms``) only after every output of the
records they cover is acknowledged, and never past an event a step still holds (an
open join), so a crash loses nothing (at-least-once). With ``guarantee="exactly_once"`` the outputs and the offsets
are one Kafka transaction and readers use ``read_committed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from pipeline.codec import decode_envelope, decode_request, encode_envelope, encode_response
from pipeline.errors import CodecError, DeploymentError, StepError
from pipeline.events import ErrorRecord, Event
from pipeline.plan import Agent, Plan
from steps.base import Emit, Outcome

logger = logging.getLogger(__name__)
INLINE_BELOW_S = 0.005  # a step whose batches take less than this runs on the event loop
CLOSE_TIMEOUT_S = 15.0  # the longest a stop waits on the broker
BATCH_BYTES = 16_384  # the producer's batch_size (aiokafka's default); a larger record is sent alone


@dataclass(frozen=True)
class AgentSettings:
    """Batching, client and group settings shared by every agent of a process."""

    max_batch_size: int = 500
    max_batch_time_ms: int = 100  # poll wait when nothing is buffered; a batch is what arrived by then
    linger_ms: int = 1
    max_request_size: int = 1_048_576
    compression_type: str | None = None
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_500
    fetch_max_wait_ms: int = 500  # the broker answers as soon as a record arrives; this only saves idle polls
    commit_interval_ms: int = 100  # at-least-once: outputs are awaited and offsets committed this often
    instance: int = 0


@dataclass(slots=True)
class _Send:
    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    source: ConsumerRecord | None = None  # the record it answers, dead-lettered if it cannot be sent


@dataclass(slots=True)
class _Batch:
    """Records handed to the producer as one record batch, and the batch's delivery."""

    topic: str
    partition: int
    sends: list[_Send]
    delivery: asyncio.Future


class _Partitioner:
    """Kafka's default partitioning for keyed records (aiokafka's, the Java client's); records
    without a key all go to one partition picked at random, so they form one batch."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = sorted(partitions)
        self.unkeyed = random.choice(self.partitions)

    def __call__(self, key: bytes | None) -> int:
        if key is None:
            return self.unkeyed
        return DefaultPartitioner()(key, self.partitions, self.partitions)


class StreamAgent:
    """Runs one :class:`pipeline.plan.Agent` against a Kafka cluster until stopped."""

    def __init__(self, plan: Plan, agent: Agent, bootstrap: str, settings: AgentSettings | None = None) -> None:
        self.plan, self.agent, self.bootstrap = plan, agent, bootstrap
        self.settings = settings or AgentSettings()
        self.group = f"{plan.graph.name}.{agent.name}"
        self.exactly_once = plan.graph.guarantee == "exactly_once"
        self._consumed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._overrun: asyncio.Future | None = None
        self._inline = False  # the first batch runs in a thread: its cost is unknown
        self._in_flight: list[_Batch] = []  # sent since the last commit started
        self._committing: asyncio.Task | None = None
        self._last_commit = time.monotonic()
        self.processed = 0

    # -- life cycle -------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Consume and process until ``stopping`` is set, then commit and leave the group."""
        s = self.settings
        self.agent.step.load()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=f"{self.group}.{s.instance}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            isolation_level="read_committed" if self.exactly_once else "read_uncommitted",
        )
        transactional = {"transactional_id": f"{self.group}.{s.instance}", "transaction_timeout_ms": 10_000}
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.group}.{s.instance}",
            acks="all",
            enable_idempotence=self.exactly_once,
            linger_ms=s.linger_ms,
            max_batch_size=BATCH_BYTES,
            max_request_size=s.max_request_size,
            compression_type=s.compression_type,
            **(transactional if self.exactly_once else {}),
        )
        try:
            await self._start_producer()
            self.consumer.subscribe([self.agent.input], listener=_Revocation(self))
            await self.consumer.start()
            logger.info("agent %s consuming %s as group %s", self.agent.name, self.agent.input, self.group)
            while not stopping.is_set():
                records = await self.consumer.getmany(timeout_ms=s.max_batch_time_ms, max_records=s.max_batch_size)
                async with self._lock:
                    await self.handle(records)
        except BaseException:
            self._consumed = dict(self._committed)  # a failed batch is redelivered, never committed
            raise
        finally:
            await self._close()

    async def _start_producer(self) -> None:
        if not self.exactly_once:
            await self.producer.start()
            return
        try:
            await asyncio.wait_for(self.producer.start(), 30)
        except KafkaConnectionError:
            raise  # the broker is down, not refusing: retried with backoff
        except (asyncio.TimeoutError, KafkaError) as exc:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            raise DeploymentError(
                f"graph {self.plan.graph.name!r} asks for exactly_once, but the broker at {self.bootstrap} did not "
                f"accept a transactional producer ({type(exc).__name__}: {exc}); use Apache Kafka (Tansu has no "
                "transactions) or guarantee='at_least_once'"
            ) from exc

    async def _close(self) -> None:
        """Commit what is safe, leave the group, flush; bounded, so a vanished broker cannot hold a stop."""
        try:
            await asyncio.wait_for(self._shutdown(), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.warning(
                "agent %s: the broker did not answer within %.0f s of stopping; left without a "
                "final commit (the last records will be redelivered)",
                self.agent.name,
                CLOSE_TIMEOUT_S,
            )
        logger.info("agent %s stopped after %d events", self.agent.name, self.processed)

    async def _shutdown(self) -> None:
        if not self.exactly_once:  # exactly-once commits only inside its transactions
            with contextlib.suppress(Exception):
                async with self._lock:
                    await self._commit_all()
        for client in (self.consumer, self.producer):
            try:
                await client.stop()
            except (KafkaError, OSError, asyncio.CancelledError) as exc:  # aiokafka's own tasks, cancelled
                logger.warning("agent %s: %s did not stop cleanly (%r)", self.agent.name, type(client).__name__, exc)

    # -- one batch --------------------------------------------------------------
    async def handle(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Process one batch of records and commit what is safe to commit."""
        s = self.settings
        sends: list[_Send] = []
        events: list[Event] = []
        originals: dict[tuple[int, int], ConsumerRecord] = {}
        for tp, batch in records.items():
            for record in batch:
                originals[record.partition, record.offset] = record
                try:
                    event = self._decode(record)
                except CodecError as exc:
                    sends.append(self._dead_letter(record, ErrorRecord.from_exception("", self.agent.name, exc)))
                    continue
                event.meta["src"] = (record.topic, record.partition, record.offset)
                events.append(event)
            self._consumed[tp] = batch[-1].offset + 1
        for outcome in await self._run_step(events):
            sends.extend(self._route(outcome, originals))
        self.processed += len(events)
        logger.debug("agent %s: %d records -> %d sends", self.agent.name, len(originals), len(sends))
        if self.exactly_once:
            await self._send_transaction(sends)
        else:
            self._in_flight += await self._dispatch(sends)
            if self._committing is not None and self._committing.done():
                await self._finish_commit()  # raises what a delivery raised: the batch is redelivered
            if self._committing is None and time.monotonic() - self._last_commit >= s.commit_interval_ms / 1000:
                self._start_commit()

    async def _run_step(self, events: list[Event]) -> list[Outcome]:
        step = self.agent.step
        outcomes = await self._process(events) if events else []
        return outcomes + step.expire(time.monotonic())

    async def _process(self, events: list[Event]) -> list[Outcome]:
        """The step's outcomes. A step whose last batch took over 5 ms (or that has a deadline)
        runs in a thread, so heartbeats go on during long batches; quick ones run inline."""
        step = self.agent.step
        if self._overrun is not None:  # a batch past its deadline still holds the step: wait for it
            with contextlib.suppress(Exception):
                await self._overrun
            self._overrun = None
        started = time.perf_counter()
        try:
            if self._inline and step.deadline_ms is None:
                return step.process(events)
            work = asyncio.ensure_future(asyncio.to_thread(step.process, events))
            if step.deadline_ms is None:
                return await work
            return await asyncio.wait_for(asyncio.shield(work), step.deadline_ms / 1000)
        except asyncio.TimeoutError:
            self._overrun = work
            late = StepError(
                f"step {step.name!r} took longer than its {step.deadline_ms:g} ms deadline "
                f"on a batch of {len(events)} events"
            )
            return [step.fail(event, late) for event in events]
        except Exception as exc:  # a broken step must not stop the agent
            logger.exception("step %s failed a whole batch of %d events", self.agent.name, len(events))
            return [step.fail(event, StepError(f"step crashed: {exc!r}")) for event in events]
        finally:
            self._inline = time.perf_counter() - started < INLINE_BELOW_S

    def _decode(self, record: ConsumerRecord) -> Event:
        headers = {name: value for name, value in record.headers}
        if self.agent.input == self.plan.source:
            event = decode_request(record.value, headers, record.key)
            event.meta["origin"] = record.timestamp
            return event
        return decode_envelope(record.value, headers)

    def _route(self, outcome: Outcome, originals: dict[tuple[int, int], ConsumerRecord]) -> list[_Send]:
        event = outcome.event
        src = event.meta.get("src")
        record = originals.get((src[1], src[2])) if src else None
        if isinstance(outcome, Emit):
            sends = [self._encode(topic, event) for topic in self.agent.targets(event, outcome.route)]
            for send in sends:
                send.source = record
            return sends
        reply = self.agent.reply_topic(event)
        if reply is not None:
            event.meta["failed"] = f"{outcome.error.error_type}: {outcome.error.message}"
            return [self._encode(reply, event)]
        self._notify(outcome.error)
        if record is None:  # held across batches (a join): the event re-encoded stands in for its bytes
            return [self._dead_letter_event(event, outcome.error)]
        return [self._dead_letter(record, outcome.error)]

    def _encode(self, topic: str, event: Event) -> _Send:
        headers = [(name, value) for name, value in event.headers.items() if name != "id"]
        headers.append(("id", event.id.encode()))
        if topic == self.plan.sink:
            return _Send(topic, encode_response(event.body, event.meta.get("format", "json")), event.key, headers)
        key = event.id.encode() if topic in self.plan.id_keyed_topics else event.key
        return _Send(topic, encode_envelope(event), key, headers)

    def _dead_letter(self, record: ConsumerRecord, error: ErrorRecord) -> _Send:
        headers = [(n, v) for n, v in record.headers if n not in _DLQ_HEADERS]
        headers += _error_headers(error, record.topic, record.partition, record.offset)
        return _Send(self.plan.dlq, record.value or b"", record.key, headers)

    def _dead_letter_event(self, event: Event, error: ErrorRecord) -> _Send:
        topic, partition, offset = event.meta.get("src") or (self.agent.input, -1, -1)
        headers = [(n, v) for n, v in event.headers.items() if n not in _DLQ_HEADERS]
        headers += _error_headers(error, topic, partition, offset)
        return _Send(self.plan.dlq, encode_envelope(event), event.key, headers)

    def _notify(self, error: ErrorRecord) -> None:
        handler = self.plan.graph.on_error
        if handler is None:
            return
        try:
            handler(error.to_dict())
        except Exception:
            logger.exception("error handler of graph %s failed", self.plan.graph.name)

    # -- producing and committing -------------------------------------------------
    async def _dispatch(self, sends: list[_Send]) -> list[_Batch]:
        """Hand ``sends`` to the producer, one record batch per partition (a quarter of the CPU of
        sending record by record); their delivery is awaited by :meth:`_deliver`."""
        groups: dict[tuple[str, int], list[_Send]] = {}
        partitioners: dict[str, _Partitioner] = {}
        for send in sends:
            partitioner = partitioners.get(send.topic)
            if partitioner is None:
                partitioner = partitioners[send.topic] = _Partitioner(await self.producer.partitions_for(send.topic))
            groups.setdefault((send.topic, partitioner(send.key)), []).append(send)
        batches: list[_Batch] = []
        for (topic, partition), group in groups.items():
            batches += await self._send_batches(topic, partition, group)
        return batches

    async def _send_batches(self, topic: str, partition: int, sends: list[_Send]) -> list[_Batch]:
        sent: list[_Batch] = []
        batch, members = self.producer.create_batch(), []
        for send in sends:
            if len(send.value) > BATCH_BYTES:  # alone, through the producer's own size checks
                sent.append(_Batch(topic, partition, [send], await self._send(send, partition)))
                continue
            if batch.append(key=send.key, value=send.value, timestamp=None, headers=send.headers) is None:
                sent.append(await self._send_batch(topic, partition, batch, members))
                batch, members = self.producer.create_batch(), []
                batch.append(key=send.key, value=send.value, timestamp=None, headers=send.headers)  # always fits
            members.append(send)
        if members:
            sent.append(await self._send_batch(topic, partition, batch, members))
        return sent

    async def _send_batch(self, topic: str, partition: int, batch: BatchBuilder, members: list[_Send]) -> _Batch:
        batch.close()
        return _Batch(topic, partition, members, await self.producer.send_batch(batch, topic, partition=partition))

    async def _deliver(self, batches: list[_Batch]) -> None:
        """Await ``batches``. One its topic refuses as too large is sent again record by record;
        a record too large on its own is dead-lettered."""
        while batches:
            results = await asyncio.gather(*(batch.delivery for batch in batches), return_exceptions=True)
            retries: list[_Batch] = []
            for batch, result in zip(batches, results):
                if not isinstance(result, BaseException):
                    continue
                if not isinstance(result, MessageSizeTooLargeError):
                    raise result
                if len(batch.sends) > 1:
                    for send in batch.sends:
                        retries += await self._send_batches(batch.topic, batch.partition, [send])
                elif batch.sends[0].source is not None:
                    retries += await self._dispatch([self._too_large(batch.sends[0], "the topic's max.message.bytes")])
                else:
                    raise result
            batches = retries

    async def _send(self, send: _Send, partition: int) -> asyncio.Future:
        try:
            return await self.producer.send(
                send.topic, send.value, key=send.key, headers=send.headers, partition=partition
            )
        except MessageSizeTooLargeError:
            if send.topic == self.plan.dlq or send.source is None:
                raise
            dead = self._too_large(send, f"the {self.settings.max_request_size}-byte max_request_size")
            return await self.producer.send(dead.topic, dead.value, key=dead.key, headers=dead.headers)

    def _too_large(self, send: _Send, limit: str) -> _Send:
        assert send.source is not None
        error = ErrorRecord(
            dict(send.headers).get("id", b"").decode(),
            self.agent.name,
            "MessageSizeTooLargeError",
            f"step {self.agent.name!r} produced {len(send.value)} bytes for {send.topic!r}, over {limit}",
        )
        self._notify(error)
        return self._dead_letter(send.source, error)

    async def _send_transaction(self, sends: list[_Send]) -> None:
        offsets = self._safe_offsets()
        if not sends and not offsets:
            return
        try:
            async with self.producer.transaction():
                await self._deliver(await self._dispatch(sends))
                if offsets:
                    await self.producer.send_offsets_to_transaction(offsets, self.group)
        except KafkaError as exc:
            logger.warning(
                "agent %s: transaction aborted (%s); re-reading from the committed offsets", self.agent.name, exc
            )
            await self._rewind()
            return
        self._committed.update(offsets)
        logger.debug("agent %s: transaction committed %s", self.agent.name, offsets)

    async def _rewind(self) -> None:
        """Seek every partition back to its committed offset and forget what was held."""
        assigned = self.consumer.assignment()
        for tp in list(self._consumed):
            self._consumed.pop(tp)
            self._committed.pop(tp, None)
            if tp in assigned:
                committed = await self.consumer.committed(tp)
                if committed is None:
                    await self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed)
        self.agent.step.release(lambda event: False)

    def _safe_offsets(self) -> dict[TopicPartition, int]:
        """Per partition: the next offset to read, but never past an event still held, and only
        where it moves forward (a failed batch's stale positions are never committed)."""
        offsets = dict(self._consumed)
        for event in self.agent.step.held():
            topic, partition, offset = event.meta["src"]
            tp = TopicPartition(topic, partition)
            if tp in offsets and offset < offsets[tp]:
                offsets[tp] = offset
        return {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1)}

    def _start_commit(self) -> None:
        """Commit, in the background, what was consumed so far, once every output sent for it is delivered."""
        offsets, batches, self._in_flight = self._safe_offsets(), self._in_flight, []
        self._last_commit = time.monotonic()
        if offsets or batches:
            self._committing = asyncio.ensure_future(self._commit(batches, offsets))

    async def _finish_commit(self) -> None:
        if self._committing is not None:
            committing, self._committing = self._committing, None
            await committing

    async def _commit_all(self) -> None:
        """Wait for a commit under way, then commit everything consumed (revocation, stop)."""
        await self._finish_commit()
        self._start_commit()
        await self._finish_commit()

    async def _commit(self, batches: list[_Batch], offsets: dict[TopicPartition, int]) -> None:
        await self._deliver(batches)
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            logger.warning(
                "agent %s: commit of %s failed (%s); the records will be redelivered", self.agent.name, offsets, exc
            )
            return
        self._committed.update(offsets)

    async def revoke(self, partitions: set[TopicPartition]) -> None:
        """Finish the batch in flight (its transaction, or at-least-once a commit), then forget
        the state of ``partitions``, so their next owner starts where this worker stopped."""
        async with self._lock:
            if not self.exactly_once:
                await self._commit_all()
            self._forget(partitions)

    def _forget(self, partitions: set[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self.agent.step.release(lambda event: tuple(event.meta["src"][:2]) not in keys)
        for tp in partitions:
            self._consumed.pop(tp, None)
            self._committed.pop(tp, None)


_DLQ_HEADERS = frozenset({"error", "error_type", "step", "source_topic", "partition", "offset", "attempts"})


def _error_headers(error: ErrorRecord, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    fields: dict[str, Any] = {
        "error": error.message,
        "error_type": error.error_type,
        "step": error.step,
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "attempts": 1,
    }
    return [(name, str(value).encode()) for name, value in fields.items()]


class _Revocation(ConsumerRebalanceListener):
    def __init__(self, agent: StreamAgent) -> None:
        self.agent = agent

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            await self.agent.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logger.info(
            "agent %s assigned %s", self.agent.agent.name, sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        )
