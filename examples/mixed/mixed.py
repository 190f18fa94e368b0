"""A graph that mixes frameworks: an XGBoost, a LightGBM and an ONNX model (a scikit-learn
pipeline converted with skl2onnx) behind one router, with a majority vote over the three.

Needs ``pip install -e ".[frameworks]"``. The models are trained on scikit-learn's bundled
breast-cancer data the first time the graph is built, and saved under ``$STREAMSERVE_MODEL_DIR``
(default ``~/.cache/streamserve/models``). Each is served by the built-in server's short name.
``streamserve run examples/mixed/mixed.py:graph`` deploys it; in Python::

    from sklearn.datasets import load_breast_cancer
    from examples.mixed.mixed import graph

    rows = load_breast_cancer().data[:2].tolist()  # 30 features a row
    graph.to_mock_server().test(body={"inputs": rows})  # the vote: {..., "outputs": [0, 0], "diagnosis": [...]}
    graph.to_mock_server().test("/v2/models/onnx/infer", body={"inputs": rows})  # one model
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pipeline import Graph
from steps import VotingEnsemble

FILES = {"xgb": "cancer-xgb.json", "lgb": "cancer-lgb.txt", "onnx": "cancer-lr.onnx"}
DIAGNOSES = ("malignant", "benign")  # load_breast_cancer's label order


def model_dir() -> Path:
    """Where the trained models are kept."""
    default = Path.home() / ".cache" / "streamserve" / "models"
    return Path(os.environ.get("STREAMSERVE_MODEL_DIR", default))


def trained(model: str) -> Path:
    """The file of ``model`` ("xgb", "lgb" or "onnx"), trained and saved if it is missing."""
    path = model_dir() / FILES[model]
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=path.suffix) as tmp:
        _train(model, Path(tmp.name))
    os.replace(tmp.name, path)  # atomic: workers building the graph at once never read half a file
    return path


def _train(model: str, path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    features, labels = load_breast_cancer(return_X_y=True)
    if model == "xgb":
        import xgboost

        xgboost.XGBClassifier(n_estimators=50, max_depth=3, random_state=0).fit(features, labels).save_model(path)
    elif model == "lgb":
        import lightgbm

        gbm = lightgbm.LGBMClassifier(n_estimators=50, num_leaves=15, random_state=0, verbose=-1)
        gbm.fit(features, labels).booster_.save_model(path)
    else:
        from skl2onnx import to_onnx
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, labels)
        onnx = to_onnx(pipeline, features[:1].astype("float32"), options={"zipmap": False})
        path.write_bytes(onnx.SerializeToString())


def diagnose(body: dict[str, Any]) -> dict[str, Any]:
    """Names each row's predicted diagnosis."""
    body["diagnosis"] = [DIAGNOSES[int(label)] for label in body["outputs"]]
    return body


def build() -> Graph:
    """router(xgb, lgb, onnx, vote) -> post, with its default topics."""
    graph = Graph("mixed", source="mixed.requests", sink="mixed.predictions")
    router = graph.to_router("models", default="vote")
    router.add_model("xgb", "xgboost", model_path=str(trained("xgb")))
    router.add_model("lgb", "lightgbm", model_path=str(trained("lgb")))
    router.add_model("onnx", "onnx", model_path=str(trained("onnx")))
    router.add_model("vote", VotingEnsemble(["xgb", "lgb", "onnx"], vote="classification"))
    graph["models"].to("post", diagnose)
    graph.error_handler("dlq")
    return graph


graph = build()
