"""An in-memory broker: topics with partitions, consumer groups and commits, for the mock server
and for testing the delivery loop without Kafka (its clients: :mod:`pipeline.runtime.memory_transport`).

Nothing here ever waits, so the loop runs over it without an event loop (see :func:`run_now`).
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.runtime.partitioner import key_partition
from pipeline.runtime.transport import Header, TopicPartition

if TYPE_CHECKING:
    from pipeline.runtime.memory_transport import MemoryTransport

T = TypeVar("T")


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end at once; it must not wait on anything (memory transport,
    inline steps)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a mock-server agent waited on something; only the memory transport can run here")


@dataclass(slots=True)
class MemoryRecord:
    """A record stored in a memory topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: Any
    headers: tuple[Header, ...]


class PartitionLog(list):
    """A partition's records from offset ``base`` on (those before were dropped once read)."""

    __slots__ = ("base",)

    def __init__(self) -> None:
        super().__init__()
        self.base = 0

    @property
    def end(self) -> int:
        """The offset the next record gets."""
        return self.base + len(self)


@dataclass
class MemoryBroker:
    """Topics (lists of partitions of records), consumer groups and their committed offsets.

    ``partitions`` is the partition count of a topic created on first use; ``max_bytes``,
    when set, refuses records whose value is longer (as a topic's max.message.bytes would).
    """

    partitions: int = 1
    max_bytes: int | None = None
    topics: dict[str, list[PartitionLog]] = field(default_factory=dict)
    committed: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    members: dict[str, list[MemoryTransport]] = field(default_factory=dict)
    fail_deliveries: int = 0  # the next N deliveries fail (failure tests)
    appended: dict[str, None] = field(default_factory=dict)  # topics written since last taken, in order

    def topic(self, name: str) -> list[PartitionLog]:
        """The partitions of topic ``name``, created on first use."""
        partitions = self.topics.get(name)
        if partitions is None:
            partitions = self.topics[name] = [PartitionLog() for _ in range(self.partitions)]
        return partitions

    def append(self, topic: str, partition: int, key: bytes | None, value: Any, headers: Any) -> MemoryRecord:
        """Store one record; the record as a consumer will read it."""
        log = (self.topics.get(topic) or self.topic(topic))[partition]
        record = MemoryRecord(topic, partition, log.end, int(time.time() * 1000), key, value, tuple(headers))
        log.append(record)
        self.appended[topic] = None
        return record

    def records(self, topic: str) -> Iterator[MemoryRecord]:
        """Every record of ``topic``, partition by partition."""
        for log in self.topic(topic):
            yield from log

    def partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition of ``topic`` a record keyed ``key`` goes to: where Kafka's default
        partitioner puts it; partition 0 for an unkeyed record."""
        logs = self.topic(topic)
        return 0 if key is None or len(logs) == 1 else key_partition(key, range(len(logs)))

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The next offset of each partition of ``topic``."""
        return {(topic, number): log.end for number, log in enumerate(self.topic(topic))}

    def readable(self, partition: TopicPartition, offset: int | None) -> int:
        """Where reading ``partition`` from ``offset`` (None: the beginning) starts: no earlier than
        its first record kept (those before were dropped, as Kafka's retention drops them)."""
        return max(offset or 0, self.topic(partition[0])[partition[1]].base)

    def drop_read(self) -> None:
        """Forget the records every group reading their topic has read (and committed, if it
        commits), and every record of a topic no group reads: a long-lived mock server keeps
        only what is still to be read. Offsets go on from where they were."""
        readers: dict[str, list[MemoryTransport]] = {}
        for members in self.members.values():
            for member in members:
                readers.setdefault(member.topic, []).append(member)
        for topic, logs in self.topics.items():
            for number, log in enumerate(logs):
                if not log:
                    continue
                tp = (topic, number)
                cut = log.end
                for member in readers.get(topic, ()):
                    cut = min(cut, member.positions.get(tp, log.base))
                    committed = self.committed.get(member.group)
                    if committed is not None:
                        cut = min(cut, committed.get(tp, log.base))
                if cut > log.base:
                    del log[: cut - log.base]
                    log.base = cut

    async def rebalance(self, group: str) -> None:
        """Share the group's topic partitions among its members, round robin, calling each
        member's listener as Kafka's protocol would (revocations first)."""
        members = self.members.get(group, [])
        if not members:
            return
        topic = members[0].topic
        wanted: dict[int, set[TopicPartition]] = {id(m): set() for m in members}
        for number in range(len(self.topic(topic))):
            wanted[id(members[number % len(members)])].add((topic, number))
        for member in members:
            lost = member.owned - wanted[id(member)]
            if lost:
                await member.listener.revoked(lost)
                member.owned -= lost
                member.owned_changed()
        for member in members:
            gained = wanted[id(member)] - member.owned
            if gained:
                for tp in gained:
                    member.positions[tp] = self.readable(tp, self.committed.get(group, {}).get(tp))
                member.owned |= gained
                member.owned_changed()
                await member.listener.assigned(gained)
