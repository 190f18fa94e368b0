"""Graphs that input-handling and exactly-once tests deploy (workers load them by path)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from helpers import run_name

from pipeline import Graph
from steps import Dedupe, ModelServer


class Echo(ModelServer):
    """Returns each row's sum; sleeps 1 s when a row starts with 999; bloats on 777."""

    def predict(self, body: dict[str, Any]) -> list:
        rows = body["inputs"]
        if any(row[0] == 999 for row in rows):
            time.sleep(1.0)
        if any(row[0] == 777 for row in rows):
            return ["x" * 3_000_000 for _ in rows]  # larger than any topic's message limit
        return [sum(row) for row in rows]


class WrongRows(ModelServer):
    """Returns one row too few."""

    def predict(self, body: dict[str, Any]) -> list:
        return [0] * (len(body["inputs"]) - 1)


def inputs_graph() -> Graph:
    """router(echo with a 500 ms deadline, short) -> unique, for bad-input tests."""
    graph = Graph(run_name("inputs"))
    router = graph.to_router("models", default="echo")
    router.add_model("echo", Echo, deadline_ms=500)
    router.add_model("short", WrongRows)
    graph["models"].to("unique", Dedupe(capacity=10_000))
    return graph


def exactly_once_graph() -> Graph:
    """router(echo) under exactly-once."""
    graph = Graph(run_name("eos"), guarantee="exactly_once")
    graph.to_router("models", default="echo").add_model("echo", Echo)
    return graph


class Stamp:
    """Adds the rows as a numpy array under ``x``."""

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        body["x"] = np.asarray(body["inputs"], dtype=np.float64)
        return body


def double_in_place(body: dict[str, Any]) -> dict[str, Any]:
    body["x"] *= 2  # numpy in place: decoded arrays must be writable
    return body


def bump(body: dict[str, Any]) -> dict[str, Any]:
    body["inputs"][0][0] += 100  # mutates a nested list: a sibling branch must not see it
    return body


def merge_branches(parts: dict[str, Any]) -> dict[str, Any]:
    """One row per event: the doubled value, the value the doubling branch saw, the bumped value."""
    double, bumped = parts["double"], parts["bump"]
    merged = {"inputs": [[float(double["x"][0][0]), double["inputs"][0][0], bumped["inputs"][0][0]]]}
    return {**merged, "scale": double["scale"]} if "scale" in double else merged


def not_thirteen(body: dict[str, Any]) -> bool:
    return body["inputs"][0][1] != 13


class Scaled(ModelServer):
    """Each row's first value times the request's own ``scale``: batching must keep it per event."""

    def predict(self, body: dict[str, Any]) -> list:
        return [row[0] * body.get("scale", 1.0) for row in body["inputs"]]


class PickySum(ModelServer):
    """Each row's sum; rejects a batch holding a negative value (the runtime isolates the row)."""

    def predict(self, body: dict[str, Any]) -> list:
        if any(row[0] < 0 for row in body["inputs"]):
            raise ValueError("negative input")
        return [sum(row) for row in body["inputs"]]


def parity_graph() -> Graph:
    """Branches that mutate their body (lists and numpy in place), a join, a filter, a router to
    a batching model that fails some rows, an ensemble and a broken model."""
    from helpers import Broken, Constant

    from steps import Filter, VotingEnsemble

    graph = Graph(run_name("parity"))
    start = graph.to("start", Stamp)
    start.to("double", double_in_place)
    start.to("bump", bump)
    router = (
        graph.join("merged", after=["double", "bump"], merge=merge_branches)
        .to("keep", Filter(not_thirteen))
        .to_router("models", default="picky")
    )
    router.add_model("picky", PickySum).add_model("one", Constant, value=1.0)
    router.add_model("three", Constant, value=3.0).add_model("broken", Broken).add_model("scaled", Scaled)
    router.add_model("ens", VotingEnsemble(["one", "three"], vote="regression"))
    return graph


class NeedsFlag(ModelServer):
    """Sums each row, but fails while the file named by $STREAMSERVE_TEST_FLAG does not exist."""

    def predict(self, body: dict[str, Any]) -> list:
        import os
        from pathlib import Path

        if not Path(os.environ["STREAMSERVE_TEST_FLAG"]).exists():
            raise ValueError("the flag file is missing")
        return [sum(row) for row in body["inputs"]]


def keep(body: dict[str, Any]) -> dict[str, Any]:
    return body


def replay_graph() -> Graph:
    """pre -> router -> flaky (fails until a flag file exists): for replaying dead letters."""
    graph = Graph(run_name("replay"))
    graph.to("pre", keep).to_router("models", default="flaky").add_model("flaky", NeedsFlag)
    return graph


class Multiplier(ModelServer):
    """MLRun's test model: the first input times the ``multiplier`` class argument; explains."""

    def predict(self, request: dict[str, Any]) -> Any:
        return request["inputs"][0] * self.get_param("multiplier")

    def explain(self, request: dict[str, Any]) -> Any:
        return {"explained": request["inputs"][0]}

    def op_echo(self, event: Any) -> Any:
        return {"id": event.id, "echo": event.body, "path": event.path}


class Predictions(ModelServer):
    """Answers ``{"predictions": [x * multiplier for x in inputs]}``, as MLRun's examples do."""

    def predict(self, request: dict[str, Any]) -> Any:
        return {"predictions": [x * self.get_param("multiplier") for x in request["inputs"]]}


def caught(body: Any) -> dict[str, Any]:
    return {"caught": body}


def raiser(body: Any) -> Any:
    raise ValueError("bad input")


def mlrun_graph() -> Graph:
    """MLRun's serving scenarios: versions behind a router, body model and operation, a custom
    operation, an ensemble over dict outputs, and a flow with paths and a step error handler."""
    from steps import VotingEnsemble

    graph = Graph(run_name("mlrun"), parameters={"greeting": "hi"})
    router = graph.to_router("models", default="mean")
    router.add_model("m1", Multiplier, multiplier=100).add_model("m2", Multiplier, multiplier=200)
    router.add_model("m3:v1", Multiplier, multiplier=300).add_model("m3:v2", Multiplier, multiplier=400)
    router.add_model("p1", Predictions, multiplier=1).add_model("p2", Predictions, multiplier=3)
    router.add_model("mean", VotingEnsemble(["p1", "p2"], vote="regression", prediction_col_name="predictions"))
    return graph


class AsOneArray(ModelServer):
    """Makes one array of the call's rows (as most models do) times ``scale``; records each call's
    row count. Stacking an int row with a float one, or 1 with 1.0, would change its answer."""

    def load(self) -> None:
        self.calls: list[int] = []

    def predict(self, body: dict[str, Any]) -> list:
        self.calls.append(len(body["inputs"]))
        rows = np.asarray(body["inputs"])
        scale = body.get("scale")
        return (rows if scale is None else rows * np.asarray(scale)).tolist()


def _tensor(shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "data": data}]}


BATCHING_REQUESTS: list[dict[str, Any]] = [
    {"id": "int3", **_tensor([1, 3], [1, 2, 3])},
    {"id": "int4", **_tensor([1, 4], [1, 2, 3, 4])},  # another row shape: cannot stack with int3
    {"id": "float3", **_tensor([1, 3], [1.5, 2.5, 3.5])},
    {"id": "int3-again", **_tensor([2, 3], [4, 5, 6, 7, 8, 9])},  # stacks with int3
    {"id": "text", **_tensor([1, 2], ["a", "b"])},
    {"id": "ints", "inputs": [[1, 2]]},
    {"id": "floats", "inputs": [[1.5, 2.5]]},
    {"id": "bools", "inputs": [[True, False]]},
    {"id": "ints-again", "inputs": [[3, 4], [5, 6]]},  # stacks with ints
    {"id": "wide", "inputs": [[1, 2, 3]]},
    {"id": "nested", "inputs": [[[1, 2], [3, 4]]]},
    {"id": "scale-int", "inputs": [[2, 3]], "scale": 1},
    {"id": "scale-float", "inputs": [[2, 3]], "scale": 1.0},
    {"id": "scale-bool", "inputs": [[2, 3]], "scale": True},
    {"id": "scale-list-int", "inputs": [[2, 3]], "scale": [1, 2]},
    {"id": "scale-list-float", "inputs": [[2, 3]], "scale": [1, 2.0]},
    {"id": "scale-int-again", "inputs": [[4, 5]], "scale": 1},  # stacks with scale-int
]


def batching_graph() -> Graph:
    """router -> AsOneArray: requests a stacked call must not mix (BATCHING_REQUESTS)."""
    graph = Graph(run_name("batching"))
    graph.to_router("models", default="rows").add_model("rows", AsOneArray)
    return graph
