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
            from pipeline.plan import agent_name  # not at the top: pipeline.plan imports the steps

            self._joiner = Join(
                self.members,
                merge=self._respond,
                tags={member: agent_name(member) for member in self.members},  # "m:v2" answers as "m.v2"
                min_results=self.min_results,
                timeout_ms=self.timeout_ms,
            )
            self._joiner.name = f"{self.name}.join"
        return self._joiner

    def _respond(self, event: Event, parts: dict[str, Any]) -> dict[str, Any]:
        outputs = self.merge({member: body["outputs"] for member, body in parts.items()})
        return response(event.id, self.name, outputs, model_version=self.version)


class VotingEnsemble(Ensemble):
    """Majority vote (``vote="classification"``) or weighted mean (``"regression"``) per row.

    ``vote`` None infers it per request, as MLRun does: classification when every member
    output is a whole number, else regression. ``weights``: one per member (a list), or by
    member name (a dict; a member missing from it weighs 0); normalised. Members may answer
    ``{"<prediction_col_name>": [...]}`` (a dict with one key needs no name): the vote is over
    that column and is answered in the same shape. Ties go to the lowest label.
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        vote: Literal["classification", "regression"] | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        prediction_col_name: str | None = None,
        min_results: int | None = None,
        timeout_ms: int = 5_000,
        version: str | None = None,
    ) -> None:
        super().__init__(members, min_results=min_results, timeout_ms=timeout_ms, version=version)
        if vote not in (None, "classification", "regression"):
            raise StepError(f"vote must be 'classification', 'regression' or None (inferred), not {vote!r}")
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.members))
            if unknown:
                raise StepError(f"weights name {unknown}, which are not members {self.members}")
            weights = [weights.get(member, 0.0) for member in self.members]
        elif weights is not None and len(weights) != len(self.members):
            raise StepError(f"{len(weights)} weights given for {len(self.members)} members")
        self.vote = vote
        self.weights = None if weights is None else [float(w) for w in weights]
        self.prediction_col_name = prediction_col_name

    def merge(self, results: dict[str, Any]) -> Any:
        column = None
        if any(isinstance(outputs, Mapping) for outputs in results.values()):
            column = self._column(results)
            results = {member: outputs[column] for member, outputs in results.items()}
        votes = self._votes(results)
        return votes if column is None else {column: votes}

    def _column(self, results: dict[str, Any]) -> str:
        for member, outputs in results.items():
            if not isinstance(outputs, Mapping):
                kind = type(outputs).__name__
                raise StepError(f"ensemble {self.name!r}: member {member!r} answered {kind}, not a dict")
            column = self.prediction_col_name or (next(iter(outputs)) if len(outputs) == 1 else None)
            if column is None or column not in outputs:
                raise StepError(
                    f"ensemble {self.name!r}: member {member!r} answered a dict with keys {sorted(outputs)}; "
                    "set prediction_col_name to the one to vote on"
                )
        return column  # type: ignore[return-value]

    def _votes(self, results: dict[str, Any]) -> list:
        weight = dict(zip(self.members, self.weights or [1.0] * len(self.members)))
        members = list(results)
        columns = [list(results[m]) if isinstance(results[m], _SEQUENCES) else [results[m]] for m in members]
        rows = {len(column) for column in columns}
        if len(rows) != 1:
            raise StepError(f"ensemble {self.name!r}: members returned different row counts {rows}")
        vote = self.vote or ("classification" if all(_whole(v) for c in columns for v in c) else "regression")
        if vote == "regression":
            values = np.asarray(columns, dtype=np.float64)
            return np.average(values, axis=0, weights=[weight[m] for m in members]).tolist()
        merged = []
        for row in zip(*columns):
            tally: Counter = Counter()
            for member, label in zip(members, row):
                tally[label] += weight[member]
            best = max(tally.values())
            winners = [label for label, score in tally.items() if score == best]
            merged.append(_lowest(winners))
        return merged


_SEQUENCES = (list, tuple, np.ndarray)


def _whole(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return True  # a label such as "setosa": classification


def _lowest(labels: list[Any]) -> Any:
    """MLRun's tie rule: the lowest label (the first given, where labels do not compare)."""
    try:
        return min(labels)
    except TypeError:
        return labels[0]
