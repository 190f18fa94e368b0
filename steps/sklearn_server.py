"""SKLearnModelServer: a scikit-learn estimator saved with joblib or pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StepError
from pipeline.protocol import request_inputs, rows
from steps.model import ModelServer


class SKLearnModelServer(ModelServer):
    """Serves a scikit-learn estimator saved with joblib or pickle at ``model_path``.

    ``method`` picks the estimator method (``"predict"`` by default, ``"predict_proba"`` for
    class probabilities). A flat data point (``"inputs": [5.1, 3.5, 1.4, 0.2]``) is one row.
    """

    method: str = "predict"

    def load(self) -> None:
        if self.model is None:
            self.model = load_model_file(self.name, self.model_path)
        self.width = getattr(self.model, "n_features_in_", None)

    def validate(self, request: Any, operation: str) -> Any:
        inputs = request_inputs(request)
        table = rows(inputs)
        first = table[0] if table is not None else inputs
        if self.width is not None and len(first) != self.width:
            raise StepError(f"model {self.name!r} expects {self.width} features per row, got {len(first)}")
        return request

    def predict(self, request: dict[str, Any]) -> list:
        features = np.asarray(request["inputs"], dtype=np.float64)
        if features.ndim == 1:  # one flat data point
            features = features.reshape(1, -1)
        return getattr(self.model, self.method)(features).tolist()


def load_model_file(name: str, model_path: str | None) -> Any:
    """The object saved at ``model_path`` by joblib or pickle."""
    if model_path is None:
        raise StepError(f"model {name!r}: no model_path given and no model object passed")
    if not Path(model_path).is_file():
        raise StepError(f"model {name!r}: model_path {model_path!r} does not exist")
    import joblib

    return joblib.load(model_path)
