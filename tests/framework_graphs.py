"""Models of every built-in framework, trained at test time, and the graph that serves them
(worker processes load it by path and find the model files through $STREAMSERVE_TEST_FRAMEWORK_MODELS)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from helpers import run_name

from pipeline import Graph
from steps import VotingEnsemble

MODELS_ENV = "STREAMSERVE_TEST_FRAMEWORK_MODELS"
CORRUPT = {"xgb_corrupt": "xgboost", "lgb_corrupt": "lightgbm", "onnx_corrupt": "onnx", "torch_corrupt": "pytorch"}


def wine() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's wine data: 178 rows of 13 features, 3 classes."""
    from sklearn.datasets import load_wine

    return load_wine(return_X_y=True)


class WineNet(torch.nn.Module):
    """13 standardised features -> 16 -> 3 class logits (a state dict's class, by import path)."""

    def __init__(self, mean: list[float] | None = None, scale: list[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean or [0.0] * 13, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale or [1.0] * 13, dtype=torch.float32))
        self.hidden = torch.nn.Linear(13, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden((x - self.mean) / self.scale)))


def train_models(folder: Path) -> None:
    """Train a small model of every framework on the wine data and save it in every format the
    servers load, plus a corrupt file per framework."""
    import joblib
    import lightgbm
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = wine()
    folder.mkdir(parents=True, exist_ok=True)
    booster = xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(features, labels)
    booster.save_model(folder / "xgb.json")
    booster.save_model(folder / "xgb.ubj")
    joblib.dump(booster, folder / "xgb.joblib")
    weak = {"n_estimators": 3, "learning_rate": 0.3, "random_state": 0}  # probabilities near 0.5: labels flip
    binary = xgboost.XGBClassifier(max_depth=1, **weak).fit(features, labels == 1)
    binary.save_model(folder / "xgb_binary.json")
    gbm = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, verbose=-1).fit(features, labels)
    gbm.booster_.save_model(folder / "lgb.txt")
    joblib.dump(gbm, folder / "lgb.joblib")
    one_class = lightgbm.LGBMClassifier(num_leaves=2, verbose=-1, **weak)
    one_class.fit(features, labels == 1).booster_.save_model(folder / "lgb_binary.txt")
    joblib.dump(one_class, folder / "lgb_binary.joblib")
    first = np.asarray(features[:1], dtype=np.float32)
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, labels)
    (folder / "lr.onnx").write_bytes(to_onnx(linear, first, options={"zipmap": False}).SerializeToString())
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(features, labels)
    (folder / "rf_zipmap.onnx").write_bytes(to_onnx(forest, first).SerializeToString())
    torch.manual_seed(0)
    net = WineNet(features.mean(axis=0).tolist(), features.std(axis=0).tolist())
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    inputs, targets = torch.tensor(features, dtype=torch.float32), torch.tensor(labels)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), targets).backward()
        optimiser.step()
    net.eval()
    torch.jit.save(torch.jit.script(net), folder / "net.pt")
    torch.save(net.state_dict(), folder / "net.pth")
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (inputs[:8],), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "net.pt2")
    for name, suffix in zip(CORRUPT, (".json", ".txt", ".onnx", ".pt")):
        (folder / f"{name}{suffix}").write_bytes(b"\x00 not a model " * 20)


def model_folder() -> Path:
    """Where the test run's models are ($STREAMSERVE_TEST_FRAMEWORK_MODELS)."""
    return Path(os.environ[MODELS_ENV])


def frameworks_graph() -> Graph:
    """A router over every framework's server, by registry name, in each format and method;
    a vote over four frameworks; one corrupt model file per framework."""
    folder = model_folder()
    graph = Graph(run_name("frameworks"))
    router = graph.to_router("models", default="xgb")
    router.add_model("xgb", "xgboost", model_path=folder / "xgb.json")
    router.add_model("xgb_proba", "xgboost", model_path=folder / "xgb.ubj", method="predict_proba")
    router.add_model("xgb_sklearn", "xgboost", model_path=folder / "xgb.joblib", method="predict_proba")
    router.add_model("xgb_binary", "xgboost", model_path=folder / "xgb_binary.json")
    router.add_model("xgb_binary_proba", "xgboost", model_path=folder / "xgb_binary.json", method="predict_proba")
    router.add_model("lgb", "lightgbm", model_path=folder / "lgb.txt")
    router.add_model("lgb_proba", "lightgbm", model_path=folder / "lgb.txt", method="predict_proba")
    router.add_model("lgb_sklearn", "lightgbm", model_path=folder / "lgb.joblib")
    router.add_model("lgb_binary", "lightgbm", model_path=folder / "lgb_binary.txt")
    router.add_model("lgb_binary_proba", "lightgbm", model_path=folder / "lgb_binary.txt", method="predict_proba")
    router.add_model("onnx", "onnx", model_path=folder / "lr.onnx")
    router.add_model("onnx_proba", "onnx", model_path=folder / "lr.onnx", method="predict_proba")
    router.add_model("onnx_zipmap", "onnx", model_path=folder / "rf_zipmap.onnx", method="predict_proba")
    router.add_model("torch", "pytorch", model_path=folder / "net.pt", outputs="logits", method="predict_proba")
    state = {"model_class": f"{__name__}:WineNet", "outputs": "logits"}
    router.add_model("torch_state", "pytorch", model_path=folder / "net.pth", **state)
    router.add_model("torch_export", "pytorch", model_path=folder / "net.pt2", outputs="logits")
    router.add_model("vote", VotingEnsemble(["xgb", "lgb", "onnx", "torch_export"], vote="classification"))
    for name, kind in CORRUPT.items():
        suffix = {"xgboost": ".json", "lightgbm": ".txt", "onnx": ".onnx", "pytorch": ".pt"}[kind]
        router.add_model(name, kind, model_path=folder / f"{name}{suffix}")
    return graph
