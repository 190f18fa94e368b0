"""LightGBMModelServer: a LightGBM Booster (text file) or scikit-learn-API model (joblib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import GraphError
from steps.frameworks import FrameworkModelServer

NATIVE = (".txt", ".model", ".lgb")
PICKLED = (".joblib", ".pkl", ".pickle")
FORMATS = "a LightGBM Booster saved as text (Booster.save_model), or an LGBMClassifier/LGBMRegressor saved with joblib"
BINARY = ("binary",)
MULTICLASS = ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr")


class LightGBMModelServer(FrameworkModelServer):
    """Serves a LightGBM model: a Booster saved as text, or a scikit-learn-API model
    (LGBMClassifier, LGBMRegressor, ...) saved with joblib.

    ``method="predict"`` gives labels for a classifier (as LGBMClassifier.predict; a Booster's
    labels are class indices) and values otherwise; ``"predict_proba"`` one probability per
    class (binary and multiclass objectives). NaN is a missing value, as in LightGBM.
    ``threads`` sets LightGBM's num_threads for prediction (default 1, as XGBoostModelServer;
    None: LightGBM's own). Batching
    stacks rows freely: LightGBM computes each row on its own, and its per-call cost is high.
    """

    framework = "lightgbm"
    extra = "lightgbm"
    row_independent = True
    max_batch_rows: int = 1024
    allow_nan: bool = True
    threads: int | None = 1

    def load_model(self) -> None:
        lightgbm = self.require("lightgbm")
        if self.model is None:
            self.model = self._read(lightgbm, self.model_file(NATIVE + PICKLED, FORMATS))
        model = self.model
        self._options: dict[str, Any] = {} if self.threads is None else {"num_threads": self.threads}
        if isinstance(model, lightgbm.LGBMModel):
            self._booster, self._estimator = None, model
            if not callable(getattr(model, self.method, None)):
                raise GraphError(f"model {self.name!r}: a {type(model).__name__} has no {self.method}()")
            width = model.n_features_in_
            self.objective = str(model.objective_) if isinstance(model.objective_, str) else "custom"
        elif isinstance(model, lightgbm.Booster):
            self._booster, self._estimator = model, None
            width = model.num_feature()
            self.objective = str(model.params.get("objective", "")).split()[0] if model.params else ""
            if self.method == "predict_proba" and self.objective not in BINARY + MULTICLASS:
                raise GraphError(
                    f"model {self.name!r}: a booster with objective {self.objective or 'unknown'!r} gives no class "
                    "probabilities (binary and multiclass ones do); use method='predict'"
                )
        else:
            raise GraphError(f"model {self.name!r}: got a {type(model).__name__}, not {FORMATS}")
        self.input_dtype = np.dtype(np.float64)
        self.row_shape = (int(width),)

    def _read(self, lightgbm: Any, path: Path) -> Any:
        if not path.name.endswith(PICKLED):
            try:
                return lightgbm.Booster(model_file=str(path))
            except Exception as exc:
                raise self.unreadable(path, "a LightGBM Booster text file", exc) from None
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:
            raise self.unreadable(path, f"a model saved with joblib ({FORMATS})", exc) from None

    def forward(self, rows: np.ndarray) -> np.ndarray:
        if self._estimator is not None:
            return np.asarray(getattr(self._estimator, self.method)(rows, **self._options))
        outputs = self._booster.predict(rows, **self._options)
        if self.objective in BINARY:
            if self.method == "predict_proba":
                return np.vstack((1.0 - outputs, outputs)).transpose()
            return (outputs > 0.5).astype(np.int64)  # as LGBMClassifier: the argmax of (1 - p, p)
        if self.objective in MULTICLASS and self.method == "predict":
            return np.argmax(outputs, axis=1)
        return outputs
