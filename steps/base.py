"""The step contract: a step turns a batch of events into routed outcomes.

The runtime (one delivery loop, over Kafka or in memory for the mock server) only ever
calls :meth:`Step.setup`, :meth:`Step.process`, :meth:`Step.expire`, :meth:`Step.held` and
:meth:`Step.release`. A step declares the named routes it emits on (:meth:`Step.routes`)
and the sub-steps that run as agents of their own (:meth:`Step.parts`); where an outcome
goes is decided by the deployment plan from its ``route``, never by the step.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
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
RESPOND = "@respond"  # the route of an outcome that is the answer at once (to the sink, past later steps)


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
    error_handler: Callable[..., Any] | None = None  # its return value answers a failed event

    def setup(self) -> None:
        """Called by the runtime once per worker before the first event: runs :meth:`load`."""
        self.load()

    def load(self) -> None:
        """Prepare to serve (load a model, open a table)."""

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

    def fail(self, event: Event, exc: BaseException) -> Outcome:
        """The outcome for ``event`` rejected because of ``exc``: a failure, or the step's
        ``error_handler(body[, error])`` result as the answer (a failure if that raises too)."""
        error = ErrorRecord.from_exception(event.id, self.name, exc)
        handler = self.error_handler
        if handler is None:
            return Fail(event, error)
        try:
            takes_error = len(inspect.signature(handler).parameters) > 1
            answer = handler(event.body, error.to_dict()) if takes_error else handler(event.body)
        except Exception as again:
            return Fail(event, ErrorRecord.from_exception(event.id, self.name, again))
        return Emit(event.derive(answer), RESPOND)


class TaskStep(Step):
    """Runs a callable on each event's body (or the whole event with ``full_event``).

    A handler returning ``None`` filters the event out. ``input_path`` gives the handler
    that part of the body (dotted) and ``result_path`` puts its result there (else the result
    is the body). A handler with a ``context`` parameter gets the graph's context; an
    ``async def`` handler is awaited (a batch's calls run concurrently).
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        full_event: bool = False,
        input_path: str | None = None,
        result_path: str | None = None,
        context: Any = None,
    ) -> None:
        from pipeline.protocol import get_in, set_in

        self.handler, self.full_event = handler, full_event
        self.input_path, self.result_path = input_path, result_path
        self._get_in, self._set_in = get_in, set_in
        self._context = context if _takes(handler, "context") else None
        self._async = inspect.iscoroutinefunction(handler)

    def load(self) -> None:
        target = getattr(self.handler, "__self__", None)
        if target is not None and callable(getattr(target, "load", None)):
            target.load()

    def _call(self, event: Event) -> Any:
        argument = event if self.full_event else event.body
        if self.input_path:
            argument = self._get_in(event.body, self.input_path)
        if self._context is not None:
            return self.handler(argument, context=self._context)
        return self.handler(argument)

    def process(self, events: list[Event]) -> list[Outcome]:
        calls: list[Any] = []
        for event in events:
            try:
                calls.append((True, self._call(event)))
            except Exception as exc:
                calls.append((False, exc))
        if self._async:
            calls = _awaited(calls)
        outcomes: list[Outcome] = []
        for event, (ok, result) in zip(events, calls):
            if not ok:
                outcomes.append(self.fail(event, result))
            elif isinstance(result, Event):
                outcomes.append(Emit(result))
            elif result is not None:
                try:  # a body result_path cannot hold fails this event alone, not its batch
                    event.body = self._set_in(event.body, self.result_path, result) if self.result_path else result
                except Exception as exc:
                    outcomes.append(self.fail(event, exc))
                    continue
                outcomes.append(Emit(event))  # the event is this step's own: no copy needed
        return outcomes


def _takes(handler: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(handler).parameters
    except (TypeError, ValueError):
        return False


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _awaited(calls: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    """The results of the coroutines in ``calls``, run together on a loop of their own (so a
    step can await them from any thread, the runtime's event loop included)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="streamserve-async-steps", daemon=True).start()
    futures = [asyncio.run_coroutine_threadsafe(result, _loop) if ok else None for ok, result in calls]
    done: list[tuple[bool, Any]] = []
    for (ok, result), future in zip(calls, futures):
        if future is None:
            done.append((ok, result))
            continue
        try:
            done.append((True, future.result()))
        except Exception as exc:
            done.append((False, exc))
    return done
