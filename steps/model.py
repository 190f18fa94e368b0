"""Model servers: MLRun-style serving classes with cross-event batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.errors import StepError
from pipeline.events import Event
from pipeline.protocol import model_inputs, now, parse_path, response
from steps.base import Emit, Outcome, Step


class ModelServer(Step):
    """Base of a served model: override :meth:`load` and :meth:`predict`.

    Hooks, in call order: ``preprocess(body, operation)``, ``validate(body,
    operation)``, ``predict(body)`` (or ``explain(body)``), ``postprocess(response)``.
    ``predict`` may receive the stacked rows of several events in ``body["inputs"]``
    and must return one output per row; set ``batching = False`` to get one event
    at a time. Extra keyword arguments become attributes (MLRun's class args).
    """

    batching: ClassVar[bool] = True

    def __init__(
        self,
        name: str | None = None,
        *,
        model_path: str | Path | None = None,
        version: str | None = None,
        model: Any = None,
        **params: Any,
    ) -> None:
        self.name = name or ""
        self.model_path = None if model_path is None else str(model_path)
        self.version = None if version is None else str(version)
        self.model = model
        self.params = params
        for attribute, value in params.items():
            setattr(self, attribute, value)

    def load(self) -> None:
        """Load the model; the default keeps the ``model`` given at construction."""

    def preprocess(self, body: Any, operation: str) -> Any:
        """Adapt a request body before validation; the default returns it unchanged."""
        return body

    def validate(self, body: Any, operation: str) -> None:
        """Raise if the request cannot be served; ``inputs`` rows are checked before this."""

    def predict(self, body: dict[str, Any]) -> Any:
        """One output per row of ``body["inputs"]``."""
        raise NotImplementedError(f"model {self.name!r} does not implement predict(body)")

    def explain(self, body: dict[str, Any]) -> Any:
        """An explanation of the request's prediction."""
        raise StepError(f"model {self.name!r} does not implement explain(body)")

    def postprocess(self, body: dict[str, Any]) -> Any:
        """Adapt the response body; the default returns it unchanged."""
        return body

    def process(self, events: list[Event]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        batch: list[tuple[Event, Any, Any]] = []
        for event in events:
            try:
                operation = "infer" if event.path == "/" else parse_path(event.path).operation
                body = self.preprocess(event.body, operation)
                rows = model_inputs(body)
                if rows is not body["inputs"]:
                    body = {**body, "inputs": rows}
                self.validate(body, operation)
            except Exception as exc:
                outcomes.append(self.fail(event, exc))
                continue
            if operation == "explain":
                outcomes.append(self._explain(event, body))
            elif self.batching and "parameters" not in body:
                batch.append((event, body, rows))
            else:
                outcomes.extend(self._predict([(event, body, rows)]))
        if batch:
            outcomes.extend(self._predict(batch))
        return outcomes

    def _predict(self, batch: list[tuple[Event, Any, Any]]) -> list[Outcome]:
        if len(batch) == 1:
            body, total = batch[0][1], len(batch[0][2])
        else:
            stacked = _stack([rows for _, _, rows in batch])
            body, total = {"inputs": stacked}, len(stacked)
        try:
            outputs = self.predict(body)
            if self.batching:
                produced = len(outputs) if hasattr(outputs, "__len__") else 1
                if produced != total:
                    raise StepError(f"model {self.name!r}: predict returned {produced} rows for {total} inputs")
        except Exception as exc:
            if len(batch) > 1:
                return [outcome for item in batch for outcome in self._predict([item])]
            return [self.fail(batch[0][0], exc)]
        if len(batch) == 1:
            return [self._respond(batch[0][0], outputs)]
        outcomes, start, timestamp = [], 0, now()
        for event, _, rows in batch:
            stop = start + len(rows)
            outcomes.append(self._respond(event, outputs[start:stop], timestamp))
            start = stop
        return outcomes

    def _respond(self, event: Event, outputs: Any, timestamp: str | None = None) -> Outcome:
        try:
            body = response(event.id, self.name, outputs, model_version=self.version, timestamp=timestamp)
            body = self.postprocess(body)
        except Exception as exc:
            return self.fail(event, exc)
        return Emit(event.derive(body))

    def _explain(self, event: Event, body: Any) -> Outcome:
        try:
            return self._respond(event, self.explain(body))
        except Exception as exc:
            return self.fail(event, exc)


def _stack(parts: list[Any]) -> Any:
    if all(isinstance(rows, np.ndarray) for rows in parts):
        return np.concatenate(parts)
    return [row for rows in parts for row in rows]


class SKLearnModelServer(ModelServer):
    """Serves a scikit-learn estimator saved with joblib or pickle at ``model_path``.

    ``method`` picks the estimator method (``"predict"`` by default,
    ``"predict_proba"`` for class probabilities).
    """

    method: str = "predict"

    def load(self) -> None:
        if self.model is None:
            self.model = load_model_file(self.name, self.model_path)
        self.width = getattr(self.model, "n_features_in_", None)

    def validate(self, body: Any, operation: str) -> None:
        rows = body["inputs"]
        if self.width is not None and len(rows[0]) != self.width:
            raise StepError(f"model {self.name!r} expects {self.width} features per row, got {len(rows[0])}")

    def predict(self, body: dict[str, Any]) -> list:
        features = np.asarray(body["inputs"], dtype=np.float64)
        return getattr(self.model, self.method)(features).tolist()


def load_model_file(name: str, model_path: str | None) -> Any:
    """The object saved at ``model_path`` by joblib or pickle."""
    if model_path is None:
        raise StepError(f"model {name!r}: no model_path given and no model object passed")
    if not Path(model_path).is_file():
        raise StepError(f"model {name!r}: model_path {model_path!r} does not exist")
    import joblib

    return joblib.load(model_path)
