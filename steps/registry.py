"""The built-in model servers by short name: what ``add_model("m", "xgboost", ...)`` and a YAML
graph's ``class: onnx`` mean, and which extra each needs.

Nothing here imports a framework: an entry names its class by import path.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A built-in model server: its short name, class, the extra that installs its framework,
    the modules that extra provides, and the model files it loads."""

    name: str
    path: str  # module:Class
    extra: str | None  # pip install "streamserve[<extra>]"; None: in the core install
    modules: tuple[str, ...]  # what the extra installs, as imported
    formats: str
    summary: str

    @property
    def installed(self) -> bool:
        """Whether this process can import the framework the server needs."""
        return all(importlib.util.find_spec(module) is not None for module in self.modules)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    entry.name: entry
    for entry in (
        BuiltinModel(
            "sklearn",
            "steps.sklearn_server:SKLearnModelServer",
            None,
            ("sklearn", "joblib"),
            "a scikit-learn estimator saved with joblib or pickle",
            "scikit-learn estimators: predict or predict_proba",
        ),
        BuiltinModel(
            "xgboost",
            "steps.xgboost_server:XGBoostModelServer",
            "xgboost",
            ("xgboost",),
            "a Booster saved as .json or .ubj; an XGBClassifier/XGBRegressor saved with joblib",
            "XGBoost boosters and its scikit-learn API; labels, probabilities or values",
        ),
        BuiltinModel(
            "lightgbm",
            "steps.lightgbm_server:LightGBMModelServer",
            "lightgbm",
            ("lightgbm",),
            "a Booster saved as text (.txt); an LGBMClassifier/LGBMRegressor saved with joblib",
            "LightGBM boosters and its scikit-learn API; labels, probabilities or values",
        ),
        BuiltinModel(
            "onnx",
            "steps.onnx_server:ONNXModelServer",
            "onnx",
            ("onnxruntime",),
            "an ONNX model (.onnx) with one input tensor",
            "onnxruntime; input checked against the model's signature; threads and providers",
        ),
        BuiltinModel(
            "pytorch",
            "steps.pytorch_server:PyTorchModelServer",
            "pytorch",
            ("torch",),
            "an exported program (.pt2), TorchScript (torch.jit.save), or a state dict (torch.save) with model_class",
            "PyTorch modules under torch.inference_mode; CPU, or CUDA when asked for",
        ),
    )
}


def builtin_model(name: str) -> BuiltinModel | None:
    """The built-in model server called ``name``, or None."""
    return BUILTIN_MODELS.get(name)
