"""The transport protocol: what the delivery loop needs from a broker (Kafka, or memory for
the mock server), and the records that cross it."""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from pipeline.events import Event

TopicPartition: TypeAlias = "tuple[str, int]"
Header: TypeAlias = "tuple[str, bytes | None]"


class Record(Protocol):
    """A consumed record (aiokafka's ConsumerRecord and the memory transport's have these)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: Any
    headers: Any  # a sequence of (name, value) pairs


@dataclass(slots=True)
class Outgoing:
    """A record to produce; ``source`` is the event it answers (dead-lettered if the record
    cannot be sent), None for a dead letter itself."""

    topic: str
    value: Any
    key: bytes | None
    headers: list[Header]
    source: Event | None = None


@dataclass(slots=True)
class Unreadable:
    """A record the broker client could not parse (a header name that is not UTF-8, say): the
    loop dead-letters it by its position, since its bytes cannot be had."""

    topic: str
    partition: int
    offset: int
    reason: str
    timestamp: int = -1
    key: bytes | None = None
    value: bytes = b""
    headers: tuple[Header, ...] = ()


class BatchBuilder(Protocol):
    """Records for one partition, handed to the broker as one record batch."""

    def append(self, *, key: bytes | None, value: Any, timestamp: int | None, headers: list[Header]) -> Any:
        """Add a record; None when the batch is full."""

    def close(self) -> None:
        """No more records."""


class Rebalance(Protocol):
    """Called by the transport when the group changes this member's partitions."""

    async def revoked(self, partitions: set[TopicPartition]) -> None: ...

    async def assigned(self, partitions: set[TopicPartition]) -> None: ...


class Transport(Protocol):
    """One agent's consumer (a group member on one topic) and producer.

    Failures the loop can recover from (the broker down, a refused record) are raised as
    :class:`pipeline.errors.TransportError`; a record over a size limit as
    :class:`pipeline.errors.RecordTooLarge`.
    """

    async def start(self, topic: str, group: str, listener: Rebalance) -> None:
        """Connect the producer, then join ``group`` consuming ``topic``."""

    async def poll(self, max_records: int, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        """What arrived, by partition, in offset order (empty after ``timeout_ms``)."""

    async def partitions_for(self, topic: str) -> list[int]:
        """The partitions of ``topic``."""

    def partition(self, key: bytes, partitions: list[int]) -> int:
        """The partition the broker's default partitioner gives ``key``."""

    def create_batch(self) -> BatchBuilder:
        """An empty record batch."""

    async def send_batch(self, batch: BatchBuilder, topic: str, partition: int) -> Awaitable[Any]:
        """Hand ``batch`` to the producer; await the result for its delivery."""

    async def send(self, record: Outgoing, partition: int | None) -> Awaitable[Any]:
        """Hand one record to the producer, through its size checks; await the result for its delivery."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the group's next offsets to read."""

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition``, None if none."""

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        """Read ``partition`` next from ``offset`` (None: its beginning)."""

    def assignment(self) -> Collection[TopicPartition]:
        """The partitions this member owns now."""

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """A transaction: what is sent inside is visible, with the offsets, only on commit."""

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        """Commit ``offsets`` with the open transaction."""

    async def stop(self) -> None:
        """Leave the group and close the clients."""
