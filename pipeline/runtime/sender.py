"""The producing side of an agent: partitioning, one record batch per partition, and what to
do with a record over a size limit."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import RecordTooLarge
from pipeline.runtime.settings import AgentSettings
from pipeline.runtime.transport import BatchBuilder, Outgoing, Transport

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Sent:
    """Records handed to the producer as one record batch, and the batch's delivery."""

    topic: str
    partition: int
    records: list[Outgoing]
    delivery: Awaitable[Any]


class Sender:
    """Hands records to a transport a record batch per partition (a quarter of the CPU of
    sending record by record) and awaits their delivery.

    A record longer than ``batch_bytes`` goes alone through the producer's own size checks; a
    batch its topic refuses as too large is sent again record by record; a record too large on
    its own is replaced by what ``too_large(record, reason)`` returns (a dead letter; for a dead
    letter, a smaller one), or the error stands when that is None.
    """

    def __init__(
        self,
        transport: Transport,
        too_large: Callable[[Outgoing, str], Outgoing | None],
        *,
        batch_bytes: int = AgentSettings.batch_bytes,
        max_request_size: int = AgentSettings.max_request_size,
    ) -> None:
        self.transport, self.too_large = transport, too_large
        self.batch_bytes, self.max_request_size = batch_bytes, max_request_size
        self._partitions: dict[str, list[int]] = {}
        self._unkeyed: dict[str, int] = {}
        self._split_topics: set[str] = set()  # topics that refused a batch as too large (warned once)

    async def dispatch(self, records: list[Outgoing]) -> list[Sent]:
        """Hand ``records`` to the producer; their delivery is awaited by :meth:`deliver`."""
        groups: dict[tuple[str, int], list[Outgoing]] = {}
        for record in records:
            if record.topic not in self._partitions:
                self._partitions[record.topic] = await self.transport.partitions_for(record.topic)
            groups.setdefault((record.topic, self._partition(record)), []).append(record)
        sent: list[Sent] = []
        for (topic, partition), group in groups.items():
            sent += await self._send(topic, partition, group)
        self._unkeyed.clear()  # unkeyed records of the next call go to another partition
        return sent

    def _partition(self, record: Outgoing) -> int:
        partitions = self._partitions[record.topic]
        if len(partitions) == 1:
            return partitions[0]
        if record.key is None:  # all of a call's unkeyed records go to one partition: one batch
            unkeyed = self._unkeyed.get(record.topic)
            if unkeyed is None:
                unkeyed = self._unkeyed[record.topic] = random.choice(partitions)
            return unkeyed
        return self.transport.partition(record.key, partitions)

    async def _send(self, topic: str, partition: int, records: list[Outgoing]) -> list[Sent]:
        sent: list[Sent] = []
        batch: BatchBuilder = self.transport.create_batch()
        members: list[Outgoing] = []
        for record in records:
            if isinstance(record.value, (bytes, bytearray)) and len(record.value) > self.batch_bytes:
                sent.append(await self._send_alone(record, partition))
                continue
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                sent.append(await self._send_batch(topic, partition, batch, members))
                batch, members = self.transport.create_batch(), []
                batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers)  # fits
            members.append(record)
        if members:
            sent.append(await self._send_batch(topic, partition, batch, members))
        return sent

    async def _send_batch(self, topic: str, partition: int, batch: BatchBuilder, members: list[Outgoing]) -> Sent:
        batch.close()
        return Sent(topic, partition, members, await self.transport.send_batch(batch, topic, partition))

    async def _send_alone(self, record: Outgoing, partition: int) -> Sent:
        """Send ``record`` through the producer's size checks; over them, its replacement (a
        dead letter, then that letter made smaller) until one fits or none is left."""
        at: int | None = partition
        while True:
            try:
                return Sent(record.topic, partition, [record], await self.transport.send(record, at))
            except RecordTooLarge:
                replacement = self.too_large(record, f"the {self.max_request_size}-byte max_request_size")
                if replacement is None:
                    raise
                record, partition, at = replacement, -1, None

    async def deliver(self, sent: list[Sent]) -> None:
        """Await every delivery of ``sent``; a refused batch is retried record by record."""
        while sent:
            retries: list[Sent] = []
            for batch in sent:
                try:
                    await batch.delivery
                except RecordTooLarge:
                    retries += await self._split(batch)
            sent = retries

    async def _split(self, batch: Sent) -> list[Sent]:
        if len(batch.records) > 1:
            if batch.topic not in self._split_topics:
                self._split_topics.add(batch.topic)
                logger.warning(
                    "%s refused a record batch of %d records as too large; sending its batches record by "
                    "record (set batch_bytes below the topic's max.message.bytes)",
                    batch.topic,
                    len(batch.records),
                )
            sent: list[Sent] = []
            for record in batch.records:
                sent += await self._send(batch.topic, batch.partition, [record])
            return sent
        replacement = self.too_large(batch.records[0], "the topic's max.message.bytes")
        if replacement is None:
            raise RecordTooLarge(f"a record for {batch.topic!r} is over the topic's max.message.bytes")
        return await self.dispatch([replacement])
