"""XGBoostModelServer: an XGBoost Booster (.json, .ubj) or scikit-learn-API model (joblib)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import GraphError
from steps.frameworks import FrameworkModelServer

NATIVE = (".json", ".ubj")
PICKLED = (".joblib", ".pkl", ".pickle")
FORMATS = "an XGBoost Booster saved as .json or .ubj, or an XGBClassifier/XGBRegressor saved with joblib"
CLASSIFYING = ("binary:logistic", "binary:hinge", "multi:softprob", "multi:softmax")
PROBABILITIES = ("binary:logistic", "multi:softprob")


class XGBoostModelServer(FrameworkModelServer):
    """Serves an XGBoost model: a Booster in XGBoost's own format (``.json`` or ``.ubj``), or a
    scikit-learn-API model (XGBClassifier, XGBRegressor, ...) saved with joblib.

    ``method="predict"`` gives labels for a classifier (as XGBClassifier.predict) and values
    otherwise; ``"predict_proba"`` one probability per class (binary:logistic and
    multi:softprob boosters, or a classifier's predict_proba). NaN is a missing value, as in
    XGBoost. ``threads`` sets XGBoost's nthread (default 1: more workers scale better than more
    threads, and OpenMP threads stall on busy cores; None: XGBoost's own, every core).
    A Booster is predicted with ``inplace_predict`` (no DMatrix per call). Batching stacks rows
    freely: XGBoost computes each row on its own.
    """

    framework = "xgboost"
    extra = "xgboost"
    row_independent = True
    max_batch_rows: int = 1024
    allow_nan: bool = True
    threads: int | None = 1

    def load_model(self) -> None:
        xgboost = self.require("xgboost")
        if self.model is None:
            path = self.model_file(NATIVE + PICKLED, FORMATS)
            self.model = self._read(xgboost, path)
        model = self.model
        if isinstance(model, xgboost.XGBModel):
            self._booster, self._estimator = None, model
            if self.threads is not None:
                model.set_params(n_jobs=self.threads)
            if not callable(getattr(model, self.method, None)):
                raise GraphError(f"model {self.name!r}: a {type(model).__name__} has no {self.method}()")
            width = getattr(model, "n_features_in_", None) or model.get_booster().num_features()
            self.objective = str(model.get_params().get("objective") or "")
        elif isinstance(model, xgboost.Booster):
            self._booster, self._estimator = model, None
            if self.threads is not None:
                model.set_param("nthread", self.threads)
            width = model.num_features()
            self.objective = json.loads(model.save_config())["learner"]["objective"]["name"]
            if self.method == "predict_proba" and self.objective not in PROBABILITIES:
                raise GraphError(
                    f"model {self.name!r}: a {self.objective} booster gives no class probabilities "
                    f"(those that do: {', '.join(PROBABILITIES)}); use method='predict'"
                )
        else:
            raise GraphError(f"model {self.name!r}: got a {type(model).__name__}, not {FORMATS}")
        self.input_dtype = np.dtype(np.float64)
        self.row_shape = (int(width),) if width else None

    def _read(self, xgboost: Any, path: Path) -> Any:
        if path.name.endswith(NATIVE):
            booster = xgboost.Booster()
            try:
                booster.load_model(str(path))
            except Exception as exc:
                raise self.unreadable(path, "an XGBoost Booster", exc) from None
            return booster
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:
            raise self.unreadable(path, f"a model saved with joblib ({FORMATS})", exc) from None

    def forward(self, rows: np.ndarray) -> np.ndarray:
        if self._estimator is not None:
            return np.asarray(getattr(self._estimator, self.method)(rows))
        outputs = self._booster.inplace_predict(rows)
        if self.objective not in CLASSIFYING:
            return outputs
        if self.method == "predict_proba":
            return outputs if outputs.ndim == 2 else np.vstack((1.0 - outputs, outputs)).transpose()
        if self.objective in ("multi:softmax", "binary:hinge"):
            return outputs.astype(np.int64)
        if outputs.ndim == 2:
            return np.argmax(outputs, axis=1)
        return (outputs > 0.5).astype(np.int64)
