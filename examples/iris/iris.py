"""The iris serving graph: pre -> router(lr, rf, vote) -> post.

Models are trained on scikit-learn's bundled iris data the first time a worker
loads them, and saved with joblib under ``$STREAMSERVE_MODEL_DIR`` (default
``~/.cache/streamserve/models``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import joblib

from pipeline import Graph
from steps import SKLearnModelServer, VotingEnsemble


def model_dir() -> Path:
    """Where trained iris models are kept."""
    default = Path.home() / ".cache" / "streamserve" / "models"
    return Path(os.environ.get("STREAMSERVE_MODEL_DIR", default))


def train(algorithm: str) -> Any:
    """A fresh estimator of ``algorithm`` ("lr" or "rf") fitted on the iris data."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    if algorithm == "lr":
        return LogisticRegression(max_iter=1000).fit(features, labels)
    return RandomForestClassifier(n_estimators=50, random_state=0).fit(features, labels)


class IrisModel(SKLearnModelServer):
    """An iris classifier that trains and saves itself when its file is missing."""

    algorithm = "lr"

    def load(self) -> None:
        path = Path(self.model_path or model_dir() / f"iris-{self.algorithm}.joblib")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
                joblib.dump(train(self.algorithm), tmp.name)
            os.replace(tmp.name, path)  # atomic: concurrent workers never read half a file
        self.model_path = str(path)
        super().load()


class Preprocess:
    """Casts every feature to float; rejects rows that are not 4 numbers."""

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        body["inputs"] = [[float(value) for value in row] for row in body["inputs"]]
        return body


def postprocess(body: dict[str, Any]) -> dict[str, Any]:
    """Names the predicted species."""
    species = ("setosa", "versicolor", "virginica")
    body["species"] = [species[int(label)] for label in body["outputs"]]
    return body


def build() -> Graph:
    """The iris graph, with its default topics."""
    iris = Graph("iris", source="iris.requests", sink="iris.predictions")
    router = iris.to("pre", Preprocess()).to_router("models", default="vote")
    router.add_model("lr", IrisModel, algorithm="lr")
    router.add_model("rf", IrisModel, algorithm="rf")
    router.add_model("vote", VotingEnsemble(["lr", "rf"], vote="classification"))
    iris["models"].to("post", postprocess)
    iris.error_handler("dlq")
    return iris


graph = build()
