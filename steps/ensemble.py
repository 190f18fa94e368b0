"""Ensembles: fan an event out to member models, then merge their outputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from pipeline.errors import StepError
from pipeline.events import Event
from pipeline.protocol import response
from steps.base import Emit, Outcome, Step
from steps.join import Join


class Ensemble(Step):
    """Base of a custom ensemble: override :meth:`merge`.

    The ensemble step sends each event to every member (routes named after the
    members, tagged with the ensemble's name); its :meth:`joiner` collects the
    member responses by event id and answers with ``merge`` of their outputs.
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        min_results: int | None = None,
        timeout_ms: int = 5_000,
        version: str | None = None,
    ) -> None:
        if not members:
            raise StepError("an ensemble needs at least one member model")
        self.members = list(members)
        self.min_results = min_results
        self.timeout_ms = timeout_ms
        self.version = version
        self._joiner: Join | None = None

    def merge(self, results: dict[str, Any]) -> Any:
        """One output per row from the members' outputs (``{member: outputs}``)."""
        raise NotImplementedError(f"ensemble {self.name!r} does not implement merge(results)")

    def routes(self) -> Mapping[str, str]:
        return {member: member for member in self.members}

    def parts(self) -> Sequence[Step]:
        return [self.joiner()]

    def replies(self) -> Mapping[str, str]:
        return {self.name: self.joiner().name}

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            for member in self.members:
                tagged = event.derive(event.body)  # the runtime gives each member its own body
                tagged.meta["join"] = self.name
                outcomes.append(Emit(tagged, member))
        return outcomes

    def joiner(self) -> Join:
        """The join step that turns member responses into the ensemble's response."""
        if self._joiner is None or self._joiner.name != f"{self.name}.join":
            self._joiner = Join(
                self.members, merge=self._respond, min_results=self.min_results, timeout_ms=self.timeout_ms
            )
            self._joiner.name = f"{self.name}.join"
        return self._joiner

    def _respond(self, event: Event, parts: dict[str, Any]) -> dict[str, Any]:
        outputs = self.merge({member: body["outputs"] for member, body in parts.items()})
        return response(event.id, self.name, outputs, model_version=self.version)


class VotingEnsemble(Ensemble):
    """Majority vote (``vote="classification"``) or mean (``"regression"``) per row.

    ``weights`` (one per member) weigh each member's vote or value.
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        vote: Literal["classification", "regression"] = "classification",
        weights: Sequence[float] | None = None,
        min_results: int | None = None,
        timeout_ms: int = 5_000,
        version: str | None = None,
    ) -> None:
        super().__init__(members, min_results=min_results, timeout_ms=timeout_ms, version=version)
        if vote not in ("classification", "regression"):
            raise StepError(f"vote must be 'classification' or 'regression', not {vote!r}")
        if weights is not None and len(weights) != len(self.members):
            raise StepError(f"{len(weights)} weights given for {len(self.members)} members")
        self.vote = vote
        self.weights = None if weights is None else [float(w) for w in weights]

    def merge(self, results: dict[str, Any]) -> list:
        weight = dict(zip(self.members, self.weights or [1.0] * len(self.members)))
        members = list(results)
        columns = [list(results[m]) for m in members]
        rows = {len(column) for column in columns}
        if len(rows) != 1:
            raise StepError(f"ensemble {self.name!r}: members returned different row counts {rows}")
        if self.vote == "regression":
            values = np.asarray(columns, dtype=np.float64)
            return np.average(values, axis=0, weights=[weight[m] for m in members]).tolist()
        merged = []
        for row in zip(*columns):
            tally: Counter = Counter()
            for member, label in zip(members, row):
                tally[label] += weight[member]
            merged.append(max(tally, key=tally.__getitem__))  # ties: the first member's label
        return merged
