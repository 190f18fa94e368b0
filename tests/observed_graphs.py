"""Graphs the metrics, tracing and CLI tests deploy (workers load them by path)."""

from __future__ import annotations

import time
from typing import Any

from helpers import Constant, Doubler, run_name

from pipeline import Graph
from steps import Filter, VotingEnsemble


class SlowToLoad(Doubler):
    """A Doubler whose load takes 1.5 s, so a worker is alive well before it is ready."""

    def load(self) -> None:
        time.sleep(1.5)
        super().load()


def not_skipped(body: dict[str, Any]) -> bool:
    return not body.get("skip")


def observed_graph() -> Graph:
    """keep (drops {"skip": true}) -> router(double, slow to load; ens, a mean of two constants)."""
    graph = Graph(run_name("observed"))
    router = graph.to("keep", Filter(not_skipped)).to_router("models", default="double")
    router.add_model("double", SlowToLoad)
    router.add_model("one", Constant, value=1.0).add_model("three", Constant, value=3.0)
    router.add_model("ens", VotingEnsemble(["one", "three"], vote="regression"))
    return graph
