"""Flow steps that reshape the stream: filter and enrichment."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pipeline.errors import StepError
from pipeline.events import Event, Position
from steps.base import Emit, Keep, Outcome, Step


class Filter(Step):
    """Keeps the events whose body satisfies ``predicate``; drops the rest."""

    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        self.predicate = predicate

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            try:
                if self.predicate(event.body):
                    outcomes.append(Emit(event))
            except Exception as exc:
                outcomes.append(self.fail(event, exc))
        return outcomes


class Enrich(Step):
    """Adds the fields looked up by ``body[key]`` in ``table`` (a mapping or a callable).

    The looked-up mapping is merged into the body, or stored under ``into``.
    ``on_missing`` decides what a key absent from the table does: ``"error"``
    rejects the event, ``"keep"`` passes it on unchanged, ``"drop"`` filters it.
    """

    def __init__(
        self,
        table: Mapping[Any, Any] | Callable[[Any], Any],
        *,
        key: str,
        into: str | None = None,
        on_missing: Literal["error", "keep", "drop"] = "error",
    ) -> None:
        if on_missing not in ("error", "keep", "drop"):
            raise StepError(f"on_missing must be 'error', 'keep' or 'drop', not {on_missing!r}")
        self.table = table
        self.key = key
        self.into = into
        self.on_missing = on_missing

    def lookup(self, value: Any) -> Any:
        """The table's entry for ``value``, or None when it has none."""
        if callable(self.table):
            return self.table(value)
        return self.table.get(value)

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            try:
                body = event.body
                if not isinstance(body, dict) or self.key not in body:
                    raise StepError(f"step {self.name!r}: body has no key field {self.key!r}")
                found = self.lookup(body[self.key])
                if found is None:
                    if self.on_missing == "error":
                        raise StepError(f"step {self.name!r}: no entry for {self.key}={body[self.key]!r}")
                    if self.on_missing == "keep":
                        outcomes.append(Emit(event))
                    continue
                if self.into is not None:
                    enriched = {**body, self.into: found}
                elif isinstance(found, Mapping):
                    enriched = {**body, **found}
                else:
                    raise StepError(
                        f"step {self.name!r}: lookup returned {type(found).__name__}, not a mapping; set into="
                    )
                outcomes.append(Emit(event.derive(enriched)))
            except Exception as exc:
                outcomes.append(self.fail(event, exc))
        return outcomes


class Dedupe(Step):
    """Drops a second copy of an event (same ``Event.uid``: a redelivery) among the last
    ``capacity`` events it let through.

    Put it last to make the output topic duplicate-free after redeliveries; its input is
    keyed by the event's identity, so all copies of an event reach the same worker. A client
    that sends the same request id twice gets two answers: those are two requests. What it
    remembers is tied to committed offsets, so a failed batch or a rebalance never makes it
    drop an event that was not delivered; a worker that is killed loses its memory, and the
    events it had not committed come once more (see docs/reliability.md).
    """

    keyed_by_id = True

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, Position | None] = OrderedDict()

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            if event.uid in self._seen:
                continue
            self._seen[event.uid] = event.src
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            outcomes.append(Emit(event))
        return outcomes

    def release(self, keep: Keep) -> None:
        for uid in [uid for uid, where in self._seen.items() if where is not None and not keep(where)]:
            del self._seen[uid]
