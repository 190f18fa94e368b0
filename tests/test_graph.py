"""Graph building, validation errors, and the YAML round trip."""

from __future__ import annotations

import pytest
from helpers import Constant, Doubler, add_one, negate, times_ten

from examples.iris.iris import build
from pipeline import Graph, GraphError, build_plan
from steps import Filter, VotingEnsemble
from steps.base import RESPOND


def test_fluent_chain_returns_the_new_step():
    graph = Graph("g")
    post = graph.to("a", add_one).to("b", times_ten)
    assert post.name == "b" and graph["b"].after == ["a"] and graph.successors("a") == ["b"]


@pytest.mark.parametrize(
    ("build_graph", "message"),
    [
        (lambda g: None, "has no steps"),
        (lambda g: g.add_step("a", add_one, after=["ghost"]), "comes after unknown step 'ghost'"),
        (lambda g: (g.add_step("a", add_one, after=["b"]), g.add_step("b", add_one, after=["a"])), "no entry step"),
        (
            lambda g: (
                g.to("s", add_one),
                g.add_step("a", add_one, after=["s", "b"]),
                g.add_step("b", add_one, after=["a"]),
            ),
            "cycle: a -> b -> a",
        ),
        (lambda g: g.to_router("r"), "router 'r' has no models"),
        (lambda g: g.to_router("r").add_model("v", VotingEnsemble(["x"])), "names member 'x'"),
        (lambda g: g.to_router("r", default="zz").add_model("m", Constant), "default model 'zz'"),
        (lambda g: (g.to("a", add_one), g.join("j", after=["a"])), "needs at least two steps"),
    ],
)
def test_validation_names_the_problem(build_graph, message):
    graph = Graph("g")
    build_graph(graph)
    with pytest.raises(GraphError, match=message):
        graph.validate()


def test_names_are_checked_when_added():
    graph = Graph("g")
    graph.to("a", add_one)
    with pytest.raises(GraphError, match="already has a step or model named 'a'"):
        graph.to_router("r").add_model("a", Constant)
    with pytest.raises(GraphError, match="must be 1-100 letters"):
        graph.to("bad.name", add_one)
    with pytest.raises(GraphError, match="no step 'zz'; steps: a, r"):
        graph["zz"]


def test_plan_gives_each_step_model_and_join_its_topic():
    plan = build_plan(build())
    assert {a.name: a.input for a in plan.agents} == {
        "pre": "iris.requests",
        "models": "iris.models",
        "lr": "iris.lr",
        "rf": "iris.rf",
        "vote": "iris.vote",
        "vote.join": "iris.vote.join",
        "post": "iris.post",
    }
    assert plan.agent("models").routes == {
        None: ("iris.post",),
        RESPOND: ("iris.predictions",),
        **{k: (f"iris.{k}",) for k in ("lr", "rf", "vote")},
    }
    assert plan.agent("lr").routes[None] == ("iris.post",)
    assert plan.agent("post").routes[None] == ("iris.predictions",)
    assert plan.topics()[-2:] == ["iris.predictions", "iris.dlq"]


def _branchy() -> Graph:
    graph = Graph("branchy", guarantee="exactly_once")
    start = graph.to("start", add_one)
    start.to("ten", times_ten)
    start.to("neg", negate)
    graph.join("merged", after=["ten", "neg"], timeout_ms=250).to("keep", Filter(predicate=bool))
    router = graph["keep"].to_router("models", default="d")
    router.add_model("d", Doubler, version="2")
    router.add_model("c", Constant, value=7)
    router.add_model("vote", VotingEnsemble(["d", "c"], vote="regression", weights=[1, 3]))
    graph.error_handler("errors")
    return graph


def test_yaml_round_trip_rebuilds_the_same_graph_and_behaviour():
    graph = _branchy()
    text = graph.to_yaml()
    rebuilt = Graph.from_yaml(text)
    assert rebuilt.to_dict() == graph.to_dict()
    assert rebuilt.guarantee == "exactly_once" and rebuilt.dlq == "branchy.errors"
    body = {"x": 1, "inputs": [[1.0], [2.0]]}
    assert _outputs(rebuilt, body) == _outputs(graph, body)
    iris = build()
    assert Graph.from_dict(iris.to_dict()).to_dict() == iris.to_dict()


def test_a_lambda_cannot_be_saved_and_says_why():
    graph = Graph("g")
    graph.to("a", lambda body: body)
    with pytest.raises(GraphError, match="not a lambda"):
        graph.to_yaml()


def _outputs(graph: Graph, body: dict) -> list:
    server = graph.to_mock_server()
    return [server.test(f"/v2/models/{m}/infer", body=dict(body))["outputs"] for m in ("d", "c", "vote")]
