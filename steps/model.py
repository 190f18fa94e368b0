"""Model servers: MLRun's V2 serving-class contract, with cross-event batching that never
changes an answer."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from pipeline.errors import GraphError, StepError
from pipeline.events import Event
from pipeline.protocol import OPERATIONS, get_in, now, operation, request_inputs, response, rows, set_in
from steps.base import Emit, Fail, Outcome, Step
from steps.batching import BATCH_FREE, chunks, groups, stack

logger = logging.getLogger(__name__)
PREDICTING = ("infer", "predict", "infer_dict", "predict_dict")


class ModelServer(Step):
    """Base of a served model, as MLRun's ``V2ModelServer``: override :meth:`load` and :meth:`predict`.

    Hooks, in call order: ``preprocess(body, operation)``, ``validate(request, operation)``
    (what it returns is what ``predict`` gets; None keeps the request), ``predict(request)`` or
    ``explain(request)``, ``postprocess(response)``. Custom operations are ``op_<name>(event)``
    methods. Class arguments are read with :meth:`get_param` (and set as attributes unless
    that would replace a method).

    Batching: events of one batch whose requests hold rows (``inputs`` a list of rows, or a 2-D
    array) of one layout (arrays: the same dtype and row shape; lists: the same row shape and
    value types) and agree, type for type, on every field but ``inputs`` and ``id`` (``1``,
    ``1.0`` and ``True`` differ) are predicted in one call on the stacked rows, and each gets
    its own rows' outputs. Anything else (a flat data point, dict inputs, rows of another
    layout, differing fields, outputs that are not one per row, a call that fails) is predicted
    request by request, so batching never changes an answer. A model whose ``predict`` reads the request's
    ``id`` sets ``batching = False``. ``load_mode = "async"`` loads in the background; requests
    wait up to ``ready_timeout_s`` for it.
    """

    batching: ClassVar[bool] = True
    max_batch_rows: int | None = None  # the most rows one predict call gets (None: what a batch holds)
    load_mode: Literal["sync", "async"] = "sync"
    ready_timeout_s: float = 60.0

    def __init__(
        self,
        context: Any = None,
        name: str | None = None,
        model_path: str | Path | None = None,
        model: Any = None,
        protocol: str | None = None,
        input_path: str | None = None,
        result_path: str | None = None,
        *,
        version: str | None = None,
        **params: Any,
    ) -> None:
        if isinstance(context, str) and name is None:  # ModelServer("m"): the name, positionally
            context, name = None, context
        self.context, self.name = context, name or ""
        self.model_path = None if model_path is None else str(model_path)
        self.model, self.protocol = model, protocol or "v2"
        self.input_path, self.result_path = input_path, result_path
        self.version = None if version is None else str(version)
        self.metrics: dict[str, Any] = {}
        self._params = dict(params)
        self._ready = threading.Event()
        if self.load_mode != "async":
            self._ready.set()  # sync: ready once setup() (load) has returned; async: once load ends
        for key, value in params.items():
            if callable(getattr(type(self), key, None)) or isinstance(getattr(type(self), key, None), property):
                raise GraphError(
                    f"model {self.name or type(self).__name__!r}: class argument {key!r} would replace "
                    f"{type(self).__name__}.{key}; rename it, or read it with get_param({key!r}) in a class "
                    "that does not define it"
                )
            setattr(self, key, value)

    # -- MLRun's V2ModelServer API ------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The name answers carry: the route key without its ``:version``."""
        return self.name.split(":", 1)[0]

    @property
    def ready(self) -> bool:
        """Whether :meth:`load` finished."""
        return self._ready.is_set()

    def get_param(self, key: str, default: Any = None) -> Any:
        """A class argument, else the graph's parameter ``key``, else ``default``."""
        if key in self._params:
            return self._params[key]
        getter = getattr(self.context, "get_param", None)
        return getter(key, default) if getter is not None else default

    def get_model(self, suffix: str = "") -> tuple[str, dict[str, Any]]:
        """The local model file (in ``model_path``, a file or a folder holding a file ending with
        ``suffix``) and its extra data items (none here)."""
        return str(self.find_model_file((suffix,), StepError)), {}

    def find_model_file(self, suffixes: tuple[str, ...], error: type[Exception], formats: str = "") -> Path:
        """The file ``model_path`` names (in a folder: the first file ending with one of
        ``suffixes``), or ``error`` saying what was looked for (``formats``: what is accepted)."""
        accepted = f" ({formats})" if formats else ""
        if self.model_path is None:
            passed = " and no model object passed" if formats else ""
            raise error(f"model {self.name!r}: no model_path given{passed}{accepted}")
        path = Path(self.model_path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
            if not found:
                ending = " or ".join(map(repr, suffixes))
                raise error(f"model {self.name!r}: no file ending with {ending} in {path}")
            path = found[0]
        if not path.is_file():
            raise error(f"model {self.name!r}: model_path {str(path)!r} does not exist{accepted}")
        return path

    def set_metric(self, name: str, value: Any) -> None:
        """Record a metric of this model (kept in ``metrics``; answers do not carry it)."""
        self.metrics[name] = value

    # -- hooks ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model; the default keeps the ``model`` given at construction."""

    def preprocess(self, body: Any, operation: str) -> Any:
        """Adapt a request body before validation; the default returns it unchanged."""
        return body

    def validate(self, request: Any, operation: str) -> Any:
        """Check a request; what it returns (None: the request itself) is what ``predict`` gets."""
        return request

    def predict(self, request: dict[str, Any]) -> Any:
        """The outputs for ``request["inputs"]`` (one per row to be batched)."""
        raise NotImplementedError(f"model {self.name!r} does not implement predict(request)")

    def explain(self, request: dict[str, Any]) -> Any:
        """An explanation of the request's prediction."""
        raise StepError(f"model {self.name!r} does not implement explain(request)")

    def postprocess(self, response: dict[str, Any]) -> Any:
        """Adapt the response; the default returns it unchanged."""
        return response

    # -- the runtime's side -------------------------------------------------------------
    def setup(self) -> None:
        if self.load_mode == "async":
            threading.Thread(target=self._load_async, name=f"load-{self.name}", daemon=True).start()
        else:
            self.load()

    def _load_async(self) -> None:
        try:
            self.load()
        except Exception:
            logger.exception("model %s failed to load; its requests fail as not ready", self.name)
            return
        self._ready.set()

    def process(self, events: list[Event]) -> list[Outcome]:
        done: list[list[Outcome]] = [[] for _ in events]
        pending: list[tuple[int, Event, Any, Any]] = []
        for index, event in enumerate(events):
            try:
                item = self._request(event)
            except Exception as exc:
                done[index].append(self.fail(event, exc))
                continue
            if isinstance(item, (Emit, Fail)):
                done[index].append(item)
            elif self.batching and (table := rows(item[1])) is not None:
                pending.append((index, event, item[0], table))
            else:
                self._predict([(index, event, item[0], item[1])], done)
        for group in groups(pending) if len(pending) > 1 else [pending] if pending else []:
            for chunk in chunks(group, self.max_batch_rows):
                self._predict(chunk, done)
        return [outcome for outcomes in done for outcome in outcomes]

    def _request(self, event: Event) -> Outcome | tuple[Any, Any]:
        """The validated request and its inputs, or the outcome of an operation that needs no
        prediction (ready, metadata, explain, a custom one)."""
        op = operation(event.path, event.body)
        if op == "ready":
            return Emit(event.derive({"name": self.model_name, "version": self._version() or "", "ready": self.ready}))
        if op == "metadata":
            return Emit(event.derive(self.metadata()))
        if op not in PREDICTING and op != "explain":
            custom = getattr(self, f"op_{op}", None) if op not in OPERATIONS else None
            if callable(custom):
                return Emit(event.derive(custom(event)))
            raise StepError(f"illegal model operation {op!r} for model {self.name!r}")
        if not self._ready.is_set() and not self._ready.wait(self.ready_timeout_s):
            raise StepError(f"model {self.name!r} is not ready after {self.ready_timeout_s:g} s")
        body = get_in(event.body, self.input_path) if self.input_path else event.body
        if op.endswith("_dict"):
            body = self._inputs_to_list(body)
        request = self.preprocess(body, op)
        checked = self.validate(request, op)
        request = request if checked is None else checked
        inputs = request_inputs(request)
        if isinstance(request, dict) and inputs is not request.get("inputs"):  # a V2 tensor, reshaped
            request = {**request, "inputs": inputs}
        if op == "explain":
            return self._respond(event, self.explain(request), stamped=False)
        return request, inputs

    def _predict(self, group: list[tuple[int, Event, Any, Any]], done: list[list[Outcome]]) -> None:
        """Predict ``group``'s events in one call on their stacked rows (alone for one event),
        putting each event's outcome in ``done`` at its index."""
        if len(group) == 1:
            index, event, request, _ = group[0]
            try:
                outputs = self.predict(request)
            except Exception as exc:
                done[index].append(self.fail(event, exc))
                return
            done[index].append(self._answer(event, outputs))
            return
        parts = [table for _, _, _, table in group]
        try:  # parts of one layout (batching.groups): stacking them changes no row
            stacked = stack(parts)
            request = {key: value for key, value in group[0][2].items() if key not in BATCH_FREE}
            request["inputs"] = stacked
            outputs = self.predict(request)
            per_row = isinstance(outputs, (list, tuple, np.ndarray)) and len(outputs) == len(stacked)
        except Exception:
            per_row = False
        if not per_row:  # a failing row, or outputs not one per row: each event alone, as unbatched
            for item in group:
                self._predict([item], done)
            return
        start, timestamp = 0, now()
        for (index, event, _, _), part in zip(group, parts):
            done[index].append(self._answer(event, outputs[start : start + len(part)], timestamp))
            start += len(part)

    def _answer(self, event: Event, outputs: Any, timestamp: str | None = None) -> Outcome:
        try:
            return self._respond(event, outputs, timestamp=timestamp)
        except Exception as exc:
            return self.fail(event, exc)

    def metadata(self) -> dict[str, Any]:
        """The model's V2 metadata: name, version and its input features when known."""
        features = self._features()
        return {
            "name": self.model_name,
            "version": self._version() or "",
            "inputs": [{"name": name} for name in features or ()],
            "outputs": [],
        }

    def _features(self) -> list[str] | None:
        names = self.get_param("features") or getattr(self.model, "feature_names_in_", None)
        return None if names is None else [str(name) for name in names]

    def _inputs_to_list(self, body: Any) -> Any:
        """``infer_dict``: inputs keyed by feature name, as rows in the model's feature order."""
        features = self._features()
        if features is None:
            raise StepError(
                f"model {self.name!r}: infer_dict needs the feature names: pass features=[...] to the "
                "model, or serve an estimator fitted on named columns"
            )
        inputs = body.get("inputs") if isinstance(body, dict) else None
        records = [inputs] if isinstance(inputs, dict) else inputs
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise StepError(f"model {self.name!r}: infer_dict inputs must be a dict or a list of dicts")
        missing = sorted({name for record in records for name in features if name not in record})
        if missing:
            raise StepError(f"model {self.name!r}: inputs lack the features {missing}")
        return {**body, "inputs": [[record[name] for name in features] for record in records]}

    def _respond(self, event: Event, outputs: Any, *, timestamp: str | None = None, stamped: bool = True) -> Outcome:
        body = response(
            event.id, self.model_name, outputs, model_version=self._version(), timestamp=timestamp, stamped=stamped
        )
        body = self.postprocess(body)
        if self.result_path:
            return Emit(event.derive(set_in(event.body, self.result_path, body)))
        return Emit(event.derive(body))

    def _version(self) -> str | None:
        return self.version or (self.name.split(":", 1)[1] if ":" in self.name else None)
