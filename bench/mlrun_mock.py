"""MLRun's mock server on the iris graph (pre -> router(lr) -> post); run by peer.py in MLRun's own venv.

Prints one JSON line: {"mlrun": version, "us_per_call": best mean µs per server.test() call, "answer": ...}.
It imports neither streamserve nor the bench helpers: only MLRun, scikit-learn and numpy are there.

Run: bench/.venvs/mlrun/bin/python bench/mlrun_mock.py [--repeat 5000]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

os.environ.setdefault("MLRUN_DBPATH", "")  # no MLRun service: the mock server runs in-process

import mlrun
from mlrun.serving import V2ModelServer
from timing import best_of

ROW = [[5.1, 3.5, 1.4, 0.2]]
SPECIES = ("setosa", "versicolor", "virginica")


class IrisLR(V2ModelServer):
    """The iris LogisticRegression, fitted as examples/iris/iris.py fits it."""

    def load(self) -> None:
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        features, labels = load_iris(return_X_y=True)
        self.model = LogisticRegression(max_iter=1000).fit(features, labels)

    def predict(self, body: dict[str, Any]) -> list:
        return self.model.predict(np.asarray(body["inputs"], dtype=np.float64)).tolist()


def preprocess(body: dict[str, Any]) -> dict[str, Any]:
    body["inputs"] = [[float(value) for value in row] for row in body["inputs"]]
    return body


def postprocess(body: dict[str, Any]) -> dict[str, Any]:
    body["species"] = [SPECIES[int(label)] for label in body["outputs"]]
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5000)
    args = parser.parse_args()

    function = mlrun.new_function("iris", kind="serving")
    graph = function.set_topology("flow", engine="sync")
    router = graph.to(name="pre", handler="preprocess").to("*mlrun.serving.ModelRouter", name="models")
    router.add_route("lr", class_name="IrisLR")
    router.to(name="post", handler="postprocess").respond()
    server = function.to_mock_server(namespace=globals())
    answer = server.test("/v2/models/lr/infer", body={"inputs": ROW})
    us = best_of(lambda: server.test("/v2/models/lr/infer", body={"inputs": ROW}), args.repeat)
    print(json.dumps({"mlrun": mlrun.__version__, "us_per_call": us, "answer": answer}, default=str))


if __name__ == "__main__":
    main()
