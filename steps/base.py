"""The step contract: a step turns a batch of events into routed outcomes.

The runtime (one delivery loop, over Kafka or in memory for the mock server) only ever
calls :meth:`Step.load`, :meth:`Step.process`, :meth:`Step.expire`, :meth:`Step.held` and
:meth:`Step.release`. A step declares the named routes it emits on (:meth:`Step.routes`)
and the sub-steps that run as agents of their own (:meth:`Step.parts`); where an outcome
goes is decided by the deployment plan from its ``route``, never by the step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from pipeline.events import ErrorRecord, Event, Position

Keep: TypeAlias = Callable[[Position], bool]


@dataclass(slots=True)
class Emit:
    """``event`` goes on: to the step's successors (``route`` None) or to the named route."""

    event: Event
    route: str | None = None


@dataclass(slots=True)
class Fail:
    """``event`` was rejected; ``error`` says why. It goes to the error handler."""

    event: Event
    error: ErrorRecord


Outcome: TypeAlias = Emit | Fail


class Step:
    """Base of every step kind. Subclasses implement :meth:`process`.

    ``deadline_ms``: over Kafka, a batch the step takes longer than this on is
    dead-lettered (the agent stays responsive meanwhile). ``keyed_by_id``: the
    step's input topic is keyed by event id, so every record of one event meets
    in one partition (joins, duplicate filters).
    """

    name: str = ""
    deadline_ms: float | None = None
    keyed_by_id: ClassVar[bool] = False

    def load(self) -> None:
        """Prepare to serve (load a model, open a table); called once per worker."""

    def process(self, events: list[Event]) -> list[Outcome]:
        """Outcomes for a batch of events; an event with no outcome is filtered out."""
        raise NotImplementedError

    def expire(self, now: float) -> list[Outcome]:
        """Outcomes for work held past its deadline (joins); most steps hold none."""
        return []

    def held(self) -> Iterable[Event]:
        """Events consumed but not yet answered; the runtime must not commit past them."""
        return ()

    def release(self, keep: Keep) -> None:
        """Forget what was learned from records whose position ``keep`` rejects: their partition
        was revoked, or they will be delivered again (a failed batch, an aborted transaction)."""

    def routes(self) -> Mapping[str, str]:
        """The named routes this step emits on, each to the part (agent) it reaches; unnamed
        outcomes go to the step's successors."""
        return {}

    def parts(self) -> Sequence[Step]:
        """Sub-steps that run as agents of their own (a router's models, an ensemble's join)."""
        return ()

    def replies(self) -> Mapping[str, str]:
        """Join tags this step puts on events, each to the part that collects the tagged events'
        answers (and failures) instead of the successors."""
        return {}

    def fail(self, event: Event, exc: BaseException) -> Fail:
        """The outcome for ``event`` rejected because of ``exc``."""
        return Fail(event, ErrorRecord.from_exception(event.id, self.name, exc))


class TaskStep(Step):
    """Runs a callable on each event's body (or the whole event with ``full_event``).

    A handler returning ``None`` filters the event out.
    """

    def __init__(self, handler: Callable[[Any], Any], *, full_event: bool = False) -> None:
        self.handler = handler
        self.full_event = full_event

    def load(self) -> None:
        target = getattr(self.handler, "__self__", None)
        if target is not None and callable(getattr(target, "load", None)):
            target.load()

    def process(self, events: list[Event]) -> list[Outcome]:
        handler, outcomes = self.handler, []
        for event in events:
            try:
                result = handler(event if self.full_event else event.body)
            except Exception as exc:
                outcomes.append(self.fail(event, exc))
                continue
            if result is None:
                continue
            if isinstance(result, Event):
                outcomes.append(Emit(result))
            else:
                event.body = result  # the event is this step's own: no copy needed
                outcomes.append(Emit(event))
        return outcomes
