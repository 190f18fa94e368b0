"""A client of the in-memory broker: one group member and producer, with record batches and
transactions, behind the transport protocol; records are read in offset order from every
assigned partition."""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Generator
from contextlib import asynccontextmanager
from typing import Any

from pipeline.errors import RecordTooLarge, TransportError
from pipeline.runtime.memory import MemoryBroker, PartitionLog
from pipeline.runtime.partitioner import key_partition
from pipeline.runtime.settings import AgentSettings
from pipeline.runtime.transport import Header, Outgoing, Rebalance, Record, TopicPartition


class Delivered:
    """An awaitable delivery result that is already known."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def __await__(self) -> Generator[Any, None, None]:
        if self.error is not None:
            raise self.error
        return None
        yield  # a generator that never suspends


_DONE = Delivered()


class _Batch:
    """A memory record batch: at most ``limit`` bytes of values (one record always fits)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.records: list[tuple[bytes | None, Any, list[Header]]] = []

    def append(self, *, key: bytes | None, value: Any, timestamp: int | None, headers: list[Header]) -> Any:
        size = len(value) if isinstance(value, (bytes, bytearray)) else 0
        if self.records and self.size + size > self.limit:
            return None
        self.records.append((key, value, headers))
        self.size += size
        return True

    def close(self) -> None:
        """Nothing to flush."""


class MemoryTransport:
    """One group member and producer on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, *, batch_bytes: int = AgentSettings.batch_bytes) -> None:
        self.broker, self.batch_bytes = broker, batch_bytes
        self.topic, self.group = "", ""
        self.owned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self._next = 0  # the partition a poll starts with, rotated for fairness
        self._logs: list[tuple[TopicPartition, PartitionLog]] = []  # the owned partitions' logs
        self._open: list[tuple[str, int, bytes | None, Any, list[Header]]] | None = None  # a transaction's sends
        self._offsets: dict[TopicPartition, int] = {}

    async def start(self, topic: str, group: str, listener: Rebalance) -> None:
        self.topic, self.group, self.listener = topic, group, listener
        self.broker.topic(topic)
        self.broker.members.setdefault(group, []).append(self)
        await self.broker.rebalance(group)

    def owned_changed(self) -> None:
        """The group changed this member's partitions."""
        topic = self.broker.topic(self.topic)
        self._logs = [(tp, topic[tp[1]]) for tp in sorted(self.owned)]

    async def poll(self, max_records: int, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        logs, positions = self._logs, self.positions
        if len(logs) == 1:  # one partition (the mock server's topics)
            tp, log = logs[0]
            position = positions[tp]
            start = position - log.base
            if len(log) <= start:
                return {}
            taken = log[start : start + max_records]
            positions[tp] = position + len(taken)
            return {tp: taken}  # type: ignore[dict-item]
        batches: dict[TopicPartition, list[Record]] = {}
        self._next += 1
        for index in range(len(logs)):
            tp, log = logs[(self._next + index) % len(logs)]
            position = positions[tp]
            start = position - log.base
            if len(log) <= start:
                continue
            taken = log[start : start + max_records]
            if taken:
                batches[tp] = list(taken)
                self.positions[tp] = position + len(taken)
                max_records -= len(taken)
                if max_records <= 0:
                    break
        return batches

    def pending(self) -> bool:
        """Whether records of the owned partitions are waiting to be read."""
        positions = self.positions
        for tp, log in self._logs:
            if log.end > positions[tp]:
                return True
        return False

    async def partitions_for(self, topic: str) -> list[int]:
        return list(range(len(self.broker.topic(topic))))

    def partition(self, key: bytes, partitions: list[int]) -> int:
        return key_partition(key, partitions)

    def create_batch(self) -> _Batch:
        return _Batch(self.batch_bytes)

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> Awaitable[Any]:
        limit = self.broker.max_bytes
        if limit is not None and batch.size > limit:
            return Delivered(RecordTooLarge(f"a record batch of {batch.size} bytes is over {limit} for {topic!r}"))
        if self.broker.fail_deliveries:
            self.broker.fail_deliveries -= 1
            return Delivered(TransportError(f"delivery to {topic!r} failed (injected)"))
        for key, value, headers in batch.records:
            self._store(topic, partition, key, value, headers)
        return Delivered()

    async def send(self, record: Outgoing, partition: int | None) -> Awaitable[Any]:
        value, limit = record.value, self.broker.max_bytes
        if limit is not None and isinstance(value, (bytes, bytearray)) and len(value) > limit:
            raise RecordTooLarge(f"a record of {len(value)} bytes is over {limit} for {record.topic!r}")
        if partition is None:
            partition = self.broker.partition_of(record.topic, record.key)
        self._store(record.topic, partition, record.key, value, record.headers)
        return _DONE

    def _store(self, topic: str, partition: int, key: bytes | None, value: Any, headers: list[Header]) -> None:
        if self._open is not None:
            self._open.append((topic, partition, key, value, headers))
        else:
            self.broker.append(topic, partition, key, value, headers)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.broker.committed.setdefault(self.group, {}).update(offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.broker.committed.get(self.group, {}).get(partition)

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        self.positions[partition] = self.broker.readable(partition, offset)

    def assignment(self) -> Collection[TopicPartition]:
        return set(self.owned)

    @asynccontextmanager
    async def transaction(self) -> Any:
        self._open, self._offsets = [], {}
        try:
            yield
        except BaseException:
            self._open = None
            raise
        sends, self._open = self._open, None
        for topic, partition, key, value, headers in sends:
            self.broker.append(topic, partition, key, value, headers)
        await self.commit(self._offsets)

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self._offsets.update(offsets)

    async def stop(self) -> None:
        members = self.broker.members.get(self.group, [])
        if self in members:
            members.remove(self)
            await self.listener.revoked(set(self.owned))
            self.owned.clear()
            self.owned_changed()
            await self.broker.rebalance(self.group)
