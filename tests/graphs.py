"""Graphs that input-handling and exactly-once tests deploy (workers load them by path)."""

from __future__ import annotations

import time
from typing import Any

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
