"""Sensors: what the delivery loop reports as it works, the one place metrics, tracing and tests
hook in. Every method does nothing here; subclass and override what you need."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipeline.runtime.transport import TopicPartition

if TYPE_CHECKING:
    from pipeline.events import Event
    from pipeline.runtime.transport import Outgoing
    from steps.base import Outcome


class Sensors:
    """Hook points of the delivery loop; ``agent`` is the agent's name in every call."""

    def batch_consumed(self, agent: str, records: int) -> None:
        """A batch of ``records`` records was read."""

    def step_done(self, agent: str, events: int, outcomes: int, seconds: float) -> None:
        """The step turned ``events`` events into ``outcomes`` outcomes in ``seconds``."""

    def sent(self, agent: str, records: int) -> None:
        """A batch's ``records`` records (answers, dead letters) were handed to the producer."""

    def dead_lettered(self, agent: str, error_type: str) -> None:
        """An event or record went to the dead-letter topic."""

    def committed(self, agent: str, offsets: dict[TopicPartition, int], seconds: float) -> None:
        """``offsets`` were committed (with a transaction under exactly-once)."""

    def commit_failed(self, agent: str, error: BaseException) -> None:
        """A commit, delivery or transaction failed; the records since the last commit come again."""

    def assigned(self, agent: str, partitions: set[TopicPartition]) -> None:
        """The group gave this member ``partitions``."""

    def revoked(self, agent: str, partitions: set[TopicPartition]) -> None:
        """The group took ``partitions`` from this member."""

    def started(self, agent: str) -> None:
        """The agent joined its group and polls its input topic (again after a restart)."""

    def stopped(self, agent: str) -> None:
        """The agent stopped polling: a stop, or a failure it is started again after."""

    def stepped(self, agent: str, events: list[Event], outcomes: list[Outcome]) -> None:
        """The step turned ``events`` into ``outcomes`` (right after :meth:`step_done`); an event
        with no outcome was filtered out, or is held (a join's part)."""

    def expired(self, agent: str, outcomes: list[Outcome]) -> None:
        """Work the step held past its deadline was closed as ``outcomes`` (join timeouts)."""

    def sending(self, agent: str, records: list[Outgoing]) -> None:
        """A batch's output records (answers, dead letters), right after :meth:`sent`."""


class Fanout(Sensors):
    """Reports to several sensors."""

    def __init__(self, sensors: Iterable[Sensors]) -> None:
        self.sensors = list(sensors)

    def batch_consumed(self, agent: str, records: int) -> None:
        for sensor in self.sensors:
            sensor.batch_consumed(agent, records)

    def step_done(self, agent: str, events: int, outcomes: int, seconds: float) -> None:
        for sensor in self.sensors:
            sensor.step_done(agent, events, outcomes, seconds)

    def sent(self, agent: str, records: int) -> None:
        for sensor in self.sensors:
            sensor.sent(agent, records)

    def dead_lettered(self, agent: str, error_type: str) -> None:
        for sensor in self.sensors:
            sensor.dead_lettered(agent, error_type)

    def committed(self, agent: str, offsets: dict[TopicPartition, int], seconds: float) -> None:
        for sensor in self.sensors:
            sensor.committed(agent, offsets, seconds)

    def commit_failed(self, agent: str, error: BaseException) -> None:
        for sensor in self.sensors:
            sensor.commit_failed(agent, error)

    def assigned(self, agent: str, partitions: set[TopicPartition]) -> None:
        for sensor in self.sensors:
            sensor.assigned(agent, partitions)

    def revoked(self, agent: str, partitions: set[TopicPartition]) -> None:
        for sensor in self.sensors:
            sensor.revoked(agent, partitions)

    def started(self, agent: str) -> None:
        for sensor in self.sensors:
            sensor.started(agent)

    def stopped(self, agent: str) -> None:
        for sensor in self.sensors:
            sensor.stopped(agent)

    def stepped(self, agent: str, events: list[Event], outcomes: list[Outcome]) -> None:
        for sensor in self.sensors:
            sensor.stepped(agent, events, outcomes)

    def expired(self, agent: str, outcomes: list[Outcome]) -> None:
        for sensor in self.sensors:
            sensor.expired(agent, outcomes)

    def sending(self, agent: str, records: list[Outgoing]) -> None:
        for sensor in self.sensors:
            sensor.sending(agent, records)


class Tally(Sensors):
    """Counts what happened, per agent: what tests and the CLI's summaries read."""

    def __init__(self) -> None:
        self.consumed: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.sent_records: Counter[str] = Counter()
        self.dead: Counter[tuple[str, str]] = Counter()
        self.commits: Counter[str] = Counter()
        self.failures: list[tuple[str, BaseException]] = []
        self.owned: dict[str, set[TopicPartition]] = {}

    def batch_consumed(self, agent: str, records: int) -> None:
        self.consumed[agent] += records

    def step_done(self, agent: str, events: int, outcomes: int, seconds: float) -> None:
        self.outcomes[agent] += outcomes

    def sent(self, agent: str, records: int) -> None:
        self.sent_records[agent] += records

    def dead_lettered(self, agent: str, error_type: str) -> None:
        self.dead[agent, error_type] += 1

    def committed(self, agent: str, offsets: dict[TopicPartition, int], seconds: float) -> None:
        self.commits[agent] += 1

    def commit_failed(self, agent: str, error: BaseException) -> None:
        self.failures.append((agent, error))

    def assigned(self, agent: str, partitions: set[TopicPartition]) -> None:
        self.owned.setdefault(agent, set()).update(partitions)

    def revoked(self, agent: str, partitions: set[TopicPartition]) -> None:
        self.owned.setdefault(agent, set()).difference_update(partitions)
