"""The Kafka transport: aiokafka's consumer and producer behind the transport protocol. The
only module that touches aiokafka's producer and consumer; its errors leave here as
streamserve's own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Collection, Generator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError

from pipeline.errors import DeploymentError, RecordTooLarge, TransportError
from pipeline.kafka_access import probe
from pipeline.kafka_config import KafkaConfig, KafkaConfigLike, resolve
from pipeline.runtime.partitioner import key_partition
from pipeline.runtime.settings import AgentSettings
from pipeline.runtime.transport import BatchBuilder, Outgoing, Rebalance, Record, TopicPartition, Unreadable

logger = logging.getLogger(__name__)
TRANSACTION_TIMEOUT_MS = 10_000
PROBE_TIMEOUT_MS = 500
IDLE_AFTER_S = 1.0


def _translated(exc: BaseException) -> BaseException:
    if isinstance(exc, MessageSizeTooLargeError):
        return RecordTooLarge(str(exc) or "record over the size limit")
    if isinstance(exc, (KafkaError, OSError)):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


class _Delivery:
    """A producer's delivery future whose errors are streamserve's."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from self.future.__await__())
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc


class _Listener(ConsumerRebalanceListener):
    def __init__(self, listener: Rebalance, handed: dict[KafkaPartition, int]) -> None:
        self.listener, self.handed = listener, handed

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.handed.pop(tp, None)
        if revoked:
            await self.listener.revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:  # read from the group's commit from now on
            self.handed.pop(tp, None)
        await self.listener.assigned({(tp.topic, tp.partition) for tp in assigned})


class KafkaTransport:
    """One agent's aiokafka consumer (a member of its group) and producer, connecting as
    ``kafka_config`` says (see :func:`pipeline.kafka_config.resolve`; default: the environment's)."""

    def __init__(
        self,
        bootstrap: str,
        settings: AgentSettings,
        *,
        exactly_once: bool = False,
        client_id: str = "streamserve",
        kafka_config: KafkaConfigLike = None,
    ) -> None:
        self.bootstrap, self.settings, self.exactly_once, self.client_id = bootstrap, settings, exactly_once, client_id
        self.config: KafkaConfig = resolve(kafka_config)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._busy, self._last_record = False, float("-inf")
        # per partition, the offset after the last record handed to the loop (or sought): where
        # reading goes on after a poll that failed half-way
        self._handed: dict[KafkaPartition, int] = {}

    async def start(self, topic: str, group: str, listener: Rebalance) -> None:
        try:
            await self._start(topic, group, listener)
        except BaseException:
            await self.stop()  # a failed start leaves no client open
            raise

    async def _start(self, topic: str, group: str, listener: Rebalance) -> None:
        s = self.settings
        transactional = {"transactional_id": self.client_id, "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=self.exactly_once,
            linger_ms=s.linger_ms,
            max_batch_size=s.batch_bytes,
            max_request_size=s.max_request_size,
            compression_type=s.compression_type,
            **(transactional if self.exactly_once else {}),
            **self.config.client_options(),
        )
        await self._start_producer(group)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.idle_fetch_wait_ms,  # idle until records come (_adapt_fetches)
            fetch_min_bytes=1,
            isolation_level="read_committed" if self.exactly_once else "read_uncommitted",
            **self.config.client_options(),
        )
        self.consumer.subscribe([topic], listener=_Listener(listener, self._handed))
        try:
            await self.consumer.start()
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    async def _start_producer(self, group: str) -> None:
        assert self.producer is not None
        try:
            await asyncio.wait_for(self.producer.start(), 30 if self.exactly_once else None)
        except (KafkaConnectionError, OSError) as exc:
            await probe(self.bootstrap, self.config)  # refused credentials or TLS: a DeploymentError, no retry
            raise TransportError(f"broker {self.bootstrap} unreachable: {exc}") from exc
        except (asyncio.TimeoutError, KafkaError) as exc:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            if not self.exactly_once:
                raise _translated(exc) from exc
            raise DeploymentError(
                f"group {group!r} asks for exactly_once, but the broker at {self.bootstrap} did not accept a "
                f"transactional producer ({type(exc).__name__}: {exc}); use Apache Kafka (Tansu has no "
                "transactions) or guarantee='at_least_once'"
            ) from exc

    async def poll(self, max_records: int, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        assert self.consumer is not None
        try:
            records = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc
        except Exception as exc:  # a record aiokafka cannot parse: it would fail every poll from here on
            records = await self._isolate(exc, max_records)
        handed = self._handed
        for tp, batch in records.items():
            handed[tp] = batch[-1].offset + 1
        self._adapt_fetches(bool(records))
        return records  # type: ignore[return-value]

    def _adapt_fetches(self, busy: bool) -> None:
        """Under traffic, let the broker gather ``fetch_min_bytes`` for up to ``fetch_max_wait_ms``
        (fewer, larger fetches: half the broker's CPU at 1,000/s); after a second without records,
        answer at the first record but ask only every ``idle_fetch_wait_ms`` (idle costs nothing)."""
        now, s = time.monotonic(), self.settings
        if busy:
            self._last_record = now
        wanted = busy or now - self._last_record < IDLE_AFTER_S
        if wanted != self._busy:
            self._busy = wanted
            fetcher = self.consumer._fetcher  # type: ignore[union-attr]  # aiokafka reads these per fetch request
            fetcher._fetch_max_wait_ms = s.fetch_max_wait_ms if wanted else s.idle_fetch_wait_ms
            fetcher._fetch_min_bytes = s.fetch_min_bytes if wanted else 1

    async def _isolate(self, exc: Exception, max_records: int) -> dict[TopicPartition, list[Record]]:
        """Read every owned partition one record at a time up to the record that cannot be
        parsed, which is skipped and handed on as :class:`Unreadable`.

        The failed poll may have taken other partitions' records and dropped them, so each
        partition is first read again from where the loop's last records of it ended. A
        partition revoked meanwhile is left out (its records are its next owner's)."""
        assert self.consumer is not None
        owned = sorted(self.consumer.assignment())
        await self._seek_to_handed(owned)
        batches: dict[TopicPartition, list[Record]] = {}
        for tp in owned:
            taken: list[Record] = []
            while len(taken) < max_records:
                position = await self.consumer.position(tp)
                try:
                    got = await self.consumer.getmany(tp, timeout_ms=PROBE_TIMEOUT_MS, max_records=1)
                except (KafkaError, OSError) as error:
                    raise _translated(error) from error
                except Exception as error:
                    reason = f"the record cannot be read by the Kafka client: {type(error).__name__}: {error}"
                    logger.error("%s[%d] offset %d: %s; skipped", tp.topic, tp.partition, position, reason)
                    taken.append(Unreadable(tp.topic, tp.partition, position, reason))
                    self.consumer.seek(tp, position + 1)
                    continue
                if not got:
                    break
                taken += got[tp]
            if taken:
                batches[tp] = taken
        still = self.consumer.assignment()
        logger.debug("isolated unreadable records after %r", exc)
        return {(tp.topic, tp.partition): taken for tp, taken in batches.items() if tp in still}

    async def _seek_to_handed(self, partitions: list[KafkaPartition]) -> None:
        """Read ``partitions`` next from the offset after the last record handed to the loop; one
        the loop has had nothing of since its assignment, from the group's commit."""
        assert self.consumer is not None
        for tp in partitions:
            offset = self._handed.get(tp)
            if offset is None:
                try:
                    offset = await self.consumer.committed(tp)
                except (KafkaError, OSError) as error:
                    raise _translated(error) from error
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def partitions_for(self, topic: str) -> list[int]:
        assert self.producer is not None
        try:
            return sorted(await self.producer.partitions_for(topic))
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    def partition(self, key: bytes, partitions: list[int]) -> int:
        return key_partition(key, partitions)

    def create_batch(self) -> BatchBuilder:
        assert self.producer is not None
        return self.producer.create_batch()

    async def send_batch(self, batch: BatchBuilder, topic: str, partition: int) -> Awaitable[Any]:
        assert self.producer is not None
        try:
            return _Delivery(await self.producer.send_batch(batch, topic, partition=partition))  # type: ignore[arg-type]
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    async def send(self, record: Outgoing, partition: int | None) -> Awaitable[Any]:
        assert self.producer is not None
        try:
            future = await self.producer.send(
                record.topic, record.value, key=record.key, headers=record.headers, partition=partition
            )
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc
        return _Delivery(future)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit({KafkaPartition(*tp): offset for tp, offset in offsets.items()})
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    async def committed(self, partition: TopicPartition) -> int | None:
        assert self.consumer is not None
        try:
            return await self.consumer.committed(KafkaPartition(*partition))
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        assert self.consumer is not None
        tp = KafkaPartition(*partition)
        if offset is None:
            self._handed.pop(tp, None)
            await self.consumer.seek_to_beginning(tp)
        else:
            self._handed[tp] = offset
            self.consumer.seek(tp, offset)

    def assignment(self) -> Collection[TopicPartition]:
        assert self.consumer is not None
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    @asynccontextmanager
    async def transaction(self) -> Any:
        assert self.producer is not None
        try:
            async with self.producer.transaction():
                yield
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        assert self.producer is not None
        partitions = {KafkaPartition(*tp): offset for tp, offset in offsets.items()}
        try:
            await self.producer.send_offsets_to_transaction(partitions, group)
        except (KafkaError, OSError) as exc:
            raise _translated(exc) from exc

    async def stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is None:
                continue
            try:
                await client.stop()
            except (KafkaError, OSError, asyncio.CancelledError) as exc:  # aiokafka's own tasks, cancelled
                logger.warning("%s %s did not stop cleanly (%r)", type(client).__name__, self.client_id, exc)
