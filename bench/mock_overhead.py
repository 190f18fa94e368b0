"""Mock-server framework overhead per step: a graph call vs the same work called directly.

Run: python bench/mock_overhead.py [--repeat 20000]
Prints a table and writes bench/results/mock_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import best_of

from examples.iris.iris import Preprocess, build, postprocess
from pipeline import Graph
from steps import ModelServer

ROW = [[5.1, 3.5, 1.4, 0.2]]


class Identity(ModelServer):
    """A model that costs nothing, so only the framework is timed."""

    def predict(self, body: dict[str, Any]) -> list:
        return body["inputs"]


class NoOpEstimator:
    """Answers class 0 for every row at no cost: the iris path's own framework work, without the
    scikit-learn call (~190 µs, and slower interleaved with other work than in a tight loop)."""

    n_features_in_ = 4

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows))


def noop(body: dict[str, Any]) -> dict[str, Any]:
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20_000)
    args = parser.parse_args()

    results = []
    chain = Graph("chain")
    node = chain.to("s0", noop)
    for index in range(1, 10):
        node = node.to(f"s{index}", noop)
    chain_server = chain.to_mock_server()
    graph_us = best_of(lambda: chain_server.test(body={"x": 1}), args.repeat)
    direct_us = best_of(lambda: [noop({"x": 1}) for _ in range(10)], args.repeat)
    results.append(("10 no-op task steps", 10, graph_us, direct_us))

    model_graph = Graph("model")
    model_graph.to_router("models").add_model("m", Identity)
    model_server = model_graph.to_mock_server()
    graph_us = best_of(lambda: model_server.test("/v2/models/m/infer", body={"inputs": ROW}), args.repeat)
    direct_us = best_of(lambda: Identity("m").predict({"inputs": ROW}), args.repeat)
    results.append(("router + no-op model", 2, graph_us, direct_us))

    pre = Preprocess()
    for label, estimator in (("lr", None), ("a no-op estimator", NoOpEstimator())):
        iris = build().to_mock_server()
        lr = iris.graph["models"].models["lr"][0]
        lr.model = estimator = estimator or lr.model

        def direct_iris(estimator: Any = estimator) -> dict:
            body = pre.do({"inputs": ROW})
            outputs = estimator.predict(np.asarray(body["inputs"], dtype=np.float64)).tolist()
            return postprocess({"outputs": outputs})

        graph_us = best_of(lambda iris=iris: iris.test("/v2/models/lr/infer", body={"inputs": ROW}), args.repeat // 4)
        direct_us = best_of(direct_iris, args.repeat // 4)
        results.append((f"iris pre -> router -> {label} -> post", 4, graph_us, direct_us))

    print(f"{'graph':36} {'steps':>5} {'graph µs':>9} {'direct µs':>9} {'overhead µs/step':>17}")
    rows = []
    for name, steps, graph_us, direct_us in results:
        per_step = (graph_us - direct_us) / steps
        print(f"{name:36} {steps:5d} {graph_us:9.1f} {direct_us:9.1f} {per_step:17.2f}")
        rows.append(
            {
                "graph": name,
                "steps": steps,
                "graph_us": graph_us,
                "direct_us": direct_us,
                "overhead_us_per_step": per_step,
            }
        )
    out = Path(__file__).parent / "results" / "mock_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
