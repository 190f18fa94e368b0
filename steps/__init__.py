"""The step kinds users compose into a serving graph."""

from steps.base import Emit, Fail, Outcome, Step, TaskStep
from steps.ensemble import Ensemble, VotingEnsemble
from steps.frameworks import FrameworkModelServer
from steps.join import Join
from steps.lightgbm_server import LightGBMModelServer
from steps.model import ModelServer
from steps.onnx_server import ONNXModelServer
from steps.pytorch_server import PyTorchModelServer
from steps.registry import BUILTIN_MODELS
from steps.router import ModelRouter
from steps.sklearn_server import SKLearnModelServer
from steps.transform import Dedupe, Enrich, Filter
from steps.xgboost_server import XGBoostModelServer

__all__ = [
    "BUILTIN_MODELS",
    "Dedupe",
    "Emit",
    "Enrich",
    "Ensemble",
    "Fail",
    "Filter",
    "FrameworkModelServer",
    "Join",
    "LightGBMModelServer",
    "ModelRouter",
    "ModelServer",
    "ONNXModelServer",
    "Outcome",
    "PyTorchModelServer",
    "SKLearnModelServer",
    "Step",
    "TaskStep",
    "VotingEnsemble",
    "XGBoostModelServer",
]
