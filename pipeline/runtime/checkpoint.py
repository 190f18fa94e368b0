"""Offsets of one agent: what was consumed, committed and is still held, and when and how they
are committed (in the background under at-least-once, in a transaction under exactly-once).

Rules: offsets are committed only after every output of the records they cover is delivered;
never past an event the step still holds (an open join); only forward; and a partition that
is revoked is committed first, then forgotten, step state included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pipeline.errors import TransportError
from pipeline.events import Position
from pipeline.runtime.sender import Sender, Sent
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.transport import Outgoing, TopicPartition, Transport
from steps.base import Step

logger = logging.getLogger(__name__)


class Checkpoint:
    """Sends a batch's outputs and commits what is safe, for one agent (``name``) in ``group``.

    ``commit_interval_s`` 0 commits after every batch, inline (the strict mock server); None
    never commits, awaiting each batch's delivery at once (the mock server, where nothing is
    ever read again); otherwise a commit starts in the background at most that often, and
    waits for the deliveries it covers.
    """

    def __init__(
        self,
        transport: Transport,
        sender: Sender,
        step: Step,
        *,
        name: str,
        group: str,
        exactly_once: bool,
        commit_interval_s: float | None,
        sensors: Sensors,
    ) -> None:
        self.transport, self.sender, self.step = transport, sender, step
        self.name, self.group, self.exactly_once = name, group, exactly_once
        self.interval, self.sensors = commit_interval_s, sensors
        self.consumed: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self._in_flight: list[Sent] = []  # sent since the last commit started
        self._committing: asyncio.Future | None = None
        self._last = time.monotonic()

    async def send(self, records: list[Outgoing]) -> None:
        """Send one batch's outputs, and commit when it is time; raises TransportError when a
        delivery failed (everything since the last commit is then read again)."""
        if self.interval is None:  # nothing is ever read again (the mock server): no batches, no commits
            for record in records:
                await (await self.transport.send(record, None))
            return
        if self.exactly_once:
            await self._transaction(records)
            return
        if records:
            self._in_flight += await self.sender.dispatch(records)
        if self._committing is not None and self._committing.done():
            await self._finish()
        if self._committing is None and time.monotonic() - self._last >= self.interval:
            await self._start()

    async def commit_all(self) -> None:
        """Wait for a commit under way, then commit everything consumed (revocation, stop)."""
        if self.exactly_once or self.interval is None:
            return  # exactly-once commits only inside its transactions
        await self._finish()
        await self._start()
        await self._finish()

    async def revoke(self, partitions: set[TopicPartition]) -> None:
        """Finish what was read from ``partitions`` (at-least-once: commit it), then forget them,
        so their next owner starts where this member stopped."""
        try:
            await self.commit_all()
        finally:
            self.step.release(lambda where: (where[0], where[1]) not in partitions)
            for partition in partitions:
                self.consumed.pop(partition, None)
                self.committed.pop(partition, None)

    def forget_uncommitted(self) -> None:
        """Commit nothing read since the last commit: a batch failed half-way, so what was read
        since is read again (a commit under way covers only batches before it, delivered)."""
        self.consumed = dict(self.committed)
        self._in_flight = []

    async def rewind(self) -> None:
        """Read every owned partition again from its committed offset, and make the step forget
        what it learned from records after it."""
        if self._committing is not None:
            self._committing.cancel()
            with contextlib.suppress(BaseException):
                await self._committing
            self._committing = None
        self._in_flight = []
        committed: dict[TopicPartition, int] = {}
        for partition in self.transport.assignment():
            offset = await self.transport.committed(partition)
            await self.transport.seek(partition, offset)
            if offset is not None:
                committed[partition] = offset
        self.committed, self.consumed = committed, dict(committed)
        self.step.release(lambda where: where[2] < committed.get((where[0], where[1]), -1))

    def safe_offsets(self) -> dict[TopicPartition, int]:
        """Per owned partition: the next offset to read, but never past an event still held, and
        only where it moves forward."""
        self._drop_unowned()
        offsets = dict(self.consumed)
        for event in self.step.held() or ():
            where: Position | None = event.src
            if where is None:
                continue
            partition = (where[0], where[1])
            if partition in offsets and where[2] < offsets[partition]:
                offsets[partition] = where[2]
        return {tp: offset for tp, offset in offsets.items() if offset > self.committed.get(tp, -1)}

    def _drop_unowned(self) -> None:
        """Forget partitions revoked while their records were being read (the Kafka client
        isolating an unreadable record waits, so a rebalance can come in between): committing
        them would fail on every commit from then on, and they are their new owner's."""
        owned = self.transport.assignment()
        for partition in [tp for tp in self.consumed if tp not in owned]:
            logger.info("agent %s: %s[%d] is no longer assigned; not committed", self.name, *partition)
            del self.consumed[partition]
            self.committed.pop(partition, None)

    async def _start(self) -> None:
        offsets, batches, self._in_flight = self.safe_offsets(), self._in_flight, []
        self._last = time.monotonic()
        if not (offsets or batches):
            return
        if self.interval:
            self._committing = asyncio.ensure_future(self._commit(batches, offsets))
        else:
            await self._commit(batches, offsets)

    async def _finish(self) -> None:
        if self._committing is not None:
            committing, self._committing = self._committing, None
            await committing

    async def _commit(self, batches: list[Sent], offsets: dict[TopicPartition, int]) -> None:
        await self.sender.deliver(batches)
        if not offsets:
            return
        started = time.perf_counter()
        try:
            await self.transport.commit(offsets)
        except TransportError as exc:  # a rebalance under way: the next commit covers these records
            logger.warning("agent %s: commit of %s failed (%s); the next commit covers them", self.name, offsets, exc)
            self.sensors.commit_failed(self.name, exc)
            return
        self.committed.update(offsets)
        self.sensors.committed(self.name, offsets, time.perf_counter() - started)

    async def _transaction(self, records: list[Outgoing]) -> None:
        offsets = self.safe_offsets()
        if not (records or offsets):
            return
        started = time.perf_counter()
        async with self.transport.transaction():
            await self.sender.deliver(await self.sender.dispatch(records))
            if offsets:
                await self.transport.send_offsets_to_transaction(offsets, self.group)
        self.committed.update(offsets)
        self.sensors.committed(self.name, offsets, time.perf_counter() - started)
        logger.debug("agent %s: transaction committed %s", self.name, offsets)
