"""Join: waits for every part of an event (by its internal identity, ``Event.uid``) and merges them.

Used for branch joins in a graph and, by :class:`steps.ensemble.Ensemble`, to
collect member results. All state is bounded: at most ``max_pending`` open
joins (the oldest is closed early past that) and the ids of the last
``remember`` closed joins (later duplicates of their parts are dropped).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import StepError
from pipeline.events import Event, Position
from steps.base import Emit, Keep, Outcome, Step

Merge = Callable[[Event, dict[str, Any]], Any]


def merge_bodies(event: Event, parts: dict[str, Any]) -> Any:
    """Default merge: dict bodies merged in arrival order, other bodies keyed by part."""
    if all(isinstance(body, dict) for body in parts.values()):
        merged: dict[str, Any] = {}
        for body in parts.values():
            merged.update(body)
        return merged
    return dict(parts)


@dataclass(slots=True)
class _Open:
    deadline: float
    events: list[Event] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


class Join(Step):
    """Merges the parts named ``parts`` (kept as ``expected``) of each event once all arrived or time ran out.

    ``min_results`` (default: all parts) is how many successful parts a merge
    needs; a result built from fewer parts than configured lists the missing
    ones under ``parameters.missing``. A part whose step failed arrives as an
    event with ``meta["failed"]`` and counts as missing. Parts arrive tagged
    ``meta["part"]``: the part's name, or its tag in ``tags`` (``{part: tag}``, e.g. an
    ensemble member ``m:v2`` whose agent tags its answers ``m.v2``); results, ``missing``
    and errors name parts as ``parts`` does.
    """

    keyed_by_id = True

    def __init__(
        self,
        parts: Sequence[str],
        *,
        merge: Merge = merge_bodies,
        tags: Mapping[str, str] | None = None,
        min_results: int | None = None,
        timeout_ms: int = 5_000,
        max_pending: int = 100_000,
        remember: int = 100_000,
    ) -> None:
        self.expected = tuple(parts)
        tags = tags or {}
        self._parts = {tags.get(part, part): part for part in self.expected}  # meta["part"] -> part
        self.merge = merge
        self.min_results = len(self.expected) if min_results is None else min_results
        self.timeout = timeout_ms / 1000
        self.max_pending = max_pending
        self.remember = remember
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._closed: OrderedDict[str, Position | None] = OrderedDict()  # uid -> its first part's position
        self._settled: list[list[Event]] = []  # parts (by offset) of closed joins a commit could split

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        now = time.monotonic()
        for event in events:
            part = self._parts.get(event.meta.get("part"))  # type: ignore[arg-type]
            if event.uid in self._closed or part is None:
                continue  # a redelivered part of a finished join, or not ours
            state = self._open.get(event.uid)
            if state is None:
                state = self._open[event.uid] = _Open(now + self.timeout)
            if part in state.results or part in state.failures:
                continue  # duplicate part
            state.events.append(event)
            if "failed" in event.meta:
                state.failures[part] = event.meta["failed"]
            else:
                state.results[part] = event.body
            if len(state.results) + len(state.failures) == len(self.expected):
                outcomes.append(self._close(event.uid))
        while len(self._open) > self.max_pending:
            outcomes.append(self._close(next(iter(self._open))))
        return outcomes

    def expire(self, now: float) -> list[Outcome]:
        due = [event_id for event_id, state in self._open.items() if state.deadline <= now]
        return [self._close(event_id) for event_id in due]

    def held(self) -> Iterable[Event]:
        """Parts of open joins, and the first part of each closed join that a commit below the
        oldest open part would split (a restart there would redeliver only its later parts)."""
        held = [event for state in self._open.values() for event in state.events]
        floors: dict[tuple[str, int], int] = {}
        for where, offset in (_position(event) for event in held if event.src is not None):
            floors[where] = min(floors.get(where, offset), offset)
        settled, self._settled = self._settled, []
        for parts in sorted(settled, key=lambda parts: _position(parts[-1])[1], reverse=True):
            (where, first), last = _position(parts[0]), _position(parts[-1])[1]
            floor = floors.get(where)
            if floor is None or last < floor:
                continue  # wholly below every later commit point: forget it
            if first < floor:  # a commit at floor would split it: commit below its first part
                floors[where] = first
                held.append(parts[0])
            self._settled.append(parts)
        return held

    def release(self, keep: Keep) -> None:
        def kept(events: list[Event]) -> bool:
            return all(keep(event.src) for event in events if event.src is not None)

        for uid in [uid for uid, state in self._open.items() if not kept(state.events)]:
            del self._open[uid]
        for uid in [uid for uid, where in self._closed.items() if where is not None and not keep(where)]:
            del self._closed[uid]  # its answer was not made durable: its parts will come again
        self._settled = [parts for parts in self._settled if kept(parts)]

    def _close(self, uid: str) -> Outcome:
        state = self._open.pop(uid)
        positioned = all(part.src is not None for part in state.events)  # read from a topic: offsets matter
        if positioned:
            state.events.sort(key=lambda part: _position(part)[1])
            self._settled.append(list(state.events))
        self._closed[uid] = state.events[0].src if positioned else None
        if len(self._closed) > self.remember:
            self._closed.popitem(last=False)
        first = state.events[0]
        missing = [part for part in self.expected if part not in state.results]
        event = first.derive(None)
        event.meta = _meta_without_join(first)
        if len(state.results) < self.min_results:
            reasons = [f"{part}: {state.failures.get(part, 'no result in time')}" for part in missing]
            exc = StepError(
                f"join {self.name!r}: {len(state.results)} of {len(self.expected)} parts answered, "
                f"{self.min_results} needed; missing {'; '.join(reasons)}"
            )
            return self.fail(event, exc)
        try:
            body = self.merge(event, {p: state.results[p] for p in self.expected if p in state.results})
        except Exception as exc:
            return self.fail(event, exc)
        if missing and isinstance(body, dict):
            body.setdefault("parameters", {})["missing"] = missing
        event.body = body
        return Emit(event)


def _meta_without_join(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.meta.items() if k not in ("join", "part", "failed")}


def _position(event: Event) -> tuple[tuple[str, int], int]:
    """The (topic, partition) and offset the agent read ``event`` from."""
    topic, partition, offset = event.src  # type: ignore[misc]
    return (topic, partition), offset
