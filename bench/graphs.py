"""The graphs the benchmarks deploy, each under a fresh name so topics and consumer groups are new per run.

Workers load them as ``bench/graphs.py:<factory>``; the name comes from ``$STREAMSERVE_BENCH_GRAPH``
(set by ``common.Deployment``), so every worker of one run builds the same graph.

- ``iris_graph``: the iris example (``examples/iris/iris.py``), step for step, renamed.
- ``lr_graph``: the iris LogisticRegression alone, one step (what a single model server does).
- ``heavy_graph``: one CPU-heavy step, a 300-tree random forest on synthetic data.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import joblib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.iris.iris import IrisModel, build, model_dir
from pipeline import Graph
from steps import SKLearnModelServer

GRAPH_ENV = "STREAMSERVE_BENCH_GRAPH"
HEAVY_TREES = 300
HEAVY_FEATURES = 20


def _name(name: str | None, default: str) -> str:
    return name or os.environ.get(GRAPH_ENV) or default


def iris_graph(name: str | None = None) -> Graph:
    """The iris example graph (pre -> models(lr, rf, vote) -> post) with topics ``<name>.*``."""
    name = _name(name, "iris")
    data = build().to_dict()
    return Graph.from_dict({**data, "name": name, "source": f"{name}.requests", "sink": f"{name}.predictions"})


def iris_eos_graph(name: str | None = None) -> Graph:
    """The iris graph under ``guarantee="exactly_once"``."""
    data = iris_graph(_name(name, "iris-eos")).to_dict()
    return Graph.from_dict({**data, "guarantee": "exactly_once"})


def lr_graph(name: str | None = None) -> Graph:
    """One step: the iris LogisticRegression, as a model server alone would serve it."""
    graph = Graph(_name(name, "lr"))
    graph.to("lr", IrisModel, algorithm="lr")
    graph.error_handler("dlq")
    return graph


def heavy_model_path() -> Path:
    return model_dir() / f"heavy-rf-{HEAVY_TREES}.joblib"


def train_heavy() -> Any:
    """A ``HEAVY_TREES``-tree random forest fitted on 5,000 synthetic rows of ``HEAVY_FEATURES`` features."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    features, labels = make_classification(n_samples=5000, n_features=HEAVY_FEATURES, n_informative=10, random_state=0)
    return RandomForestClassifier(n_estimators=HEAVY_TREES, random_state=0).fit(features, labels)


class HeavyForest(SKLearnModelServer):
    """The heavy model; trains and saves itself (atomically) when its file is missing."""

    def load(self) -> None:
        path = heavy_model_path()
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
                joblib.dump(train_heavy(), tmp.name)
            os.replace(tmp.name, path)
        self.model_path = str(path)
        super().load()


def heavy_graph(name: str | None = None) -> Graph:
    """One CPU-heavy model step: ``forest`` (see :class:`HeavyForest`)."""
    graph = Graph(_name(name, "heavy"))
    graph.to("forest", HeavyForest)
    graph.error_handler("dlq")
    return graph
