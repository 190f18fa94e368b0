"""Small model classes and functions the tests build graphs from (importable by path)."""

from __future__ import annotations

from typing import Any

from steps import Ensemble, ModelServer


class Doubler(ModelServer):
    """Returns each row's first value times two; records the batch sizes it saw."""

    def load(self) -> None:
        self.calls: list[int] = []

    def predict(self, body: dict[str, Any]) -> list:
        self.calls.append(len(body["inputs"]))
        return [row[0] * 2 for row in body["inputs"]]


class Constant(ModelServer):
    """Predicts ``value`` for every row (a stand-in classifier or regressor)."""

    value: Any = 0

    def predict(self, body: dict[str, Any]) -> list:
        return [self.value] * len(body["inputs"])


class Broken(ModelServer):
    """Raises on every prediction."""

    def predict(self, body: dict[str, Any]) -> list:
        raise ValueError("model exploded")


class PickyDoubler(Doubler):
    """Like Doubler, but rejects negative values (to test isolation inside a batch)."""

    def predict(self, body: dict[str, Any]) -> list:
        if any(row[0] < 0 for row in body["inputs"]):
            raise ValueError("negative input")
        return super().predict(body)


class MaxEnsemble(Ensemble):
    """A custom ensemble: the largest member output per row."""

    def merge(self, results: dict[str, Any]) -> list:
        return [max(values) for values in zip(*results.values())]


def add_one(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "x": body["x"] + 1}


def times_ten(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "ten": body["x"] * 10}


def negate(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "neg": -body["x"]}


def is_even(body: dict[str, Any]) -> bool:
    return body["x"] % 2 == 0


class Slow(ModelServer):
    """A regressor that answers ``value`` after ``delay_s`` per batch (a slow ensemble member)."""

    value: float = 0.0
    delay_s: float = 0.0

    def predict(self, body: dict[str, Any]) -> list:
        import time

        time.sleep(self.delay_s)
        return [self.value * row[0] for row in body["inputs"]]


def run_name(base: str) -> str:
    """``base`` plus this test run's suffix, so topics and groups start empty."""
    import os

    return f"{base}{os.environ.get('STREAMSERVE_TEST_RUN', '')}"


def _slow_ensemble(base: str, delay_s: float, timeout_ms: int):
    """router(fast, slow, mean): ``slow`` takes ``delay_s`` per batch; ``mean`` averages both."""
    from pipeline import Graph
    from steps import VotingEnsemble

    graph = Graph(run_name(base))
    router = graph.to_router("models", default="mean")
    router.add_model("fast", Slow, value=1.0)
    router.add_model("slow", Slow, value=3.0, delay_s=delay_s)
    router.add_model("mean", VotingEnsemble(["fast", "slow"], vote="regression", timeout_ms=timeout_ms))
    return graph


def slow_ensemble_graph():
    """router(fast, slow, mean) where ``slow`` takes 300 ms per batch."""
    return _slow_ensemble("slowens", 0.3, 30_000)


def fault_graph():
    """router -> one cheap model ``double`` (Doubler): the fault tests' small graph, named per test run."""
    from pipeline import Graph

    graph = Graph(run_name("faults"))
    graph.to_router("models", default="double").add_model("double", Doubler)
    return graph


def echo_graph():
    """One step that answers each request with its body: an agent reading the input topic and
    writing the output topic, named per test run."""
    from pipeline import Graph

    graph = Graph(run_name("echo"))
    graph.to("echo", lambda body: body)
    return graph


def slow_join_graph():
    """router(fast, slow, mean): ``slow`` takes 0.5 s per batch so the join always holds open
    events; a join missing a part times out after 5 s (into the dead-letter topic)."""
    return _slow_ensemble("slowjoin", 0.5, 5_000)
