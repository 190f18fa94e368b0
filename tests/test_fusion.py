"""Operator fusion (chosen at deploy time): cheap stateless steps run inside the agents that feed
them; the answers stay exactly those of the unfused graph, on the mock server and over Kafka."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from graphs import Scaled, mlrun_graph, parity_graph
from helpers import Constant, run_name
from test_deploy import answers_as_mock
from test_mlrun_compat import REQUESTS as MLRUN_REQUESTS
from test_parity import comparable
from test_parity import requests as parity_requests

from examples.iris.iris import build
from pipeline import Graph
from pipeline.events import Event
from pipeline.mock import MockRequest
from pipeline.plan import build_plan
from steps import VotingEnsemble
from steps.base import Emit, Outcome, Step


def test_the_iris_lr_path_takes_two_hops_instead_of_four():
    plan = build_plan(build(), fuse=True)
    assert [agent.name for agent in plan.agents] == ["pre", "lr", "rf", "vote", "vote.join"]
    assert plan.agent("pre").routes["lr"] == ("iris.lr",) and plan.agent("lr").routes[None] == ("iris.predictions",)
    assert "iris.post" not in plan.topics() and "iris.models" not in plan.topics()


def test_joins_keep_their_agents_and_a_step_feeding_two_branches_is_no_one_s_only_feeder():
    names = [agent.name for agent in build_plan(parity_graph(), fuse=True).agents]
    assert "merged" in names and "ens.join" in names  # a join holds state: it keeps its agent ...
    assert "keep" not in names and "models" not in names  # ... and the filter and router run inside it
    assert "double" in names and "bump" in names  # `start` sends to both: neither runs inside it


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
@pytest.mark.parametrize(
    ("factory", "sent"),
    [
        (parity_graph, [MockRequest(body, "/", headers) for body, headers in parity_requests()]),
        (
            mlrun_graph,
            [
                MockRequest(b, h.get("path", b"/").decode(), {k: v for k, v in h.items() if k != "path"})
                for b, h in MLRUN_REQUESTS
            ],
        ),
    ],
    ids=["parity", "mlrun"],
)
def test_fused_and_unfused_graphs_answer_alike(factory, sent, strict):
    plain = factory().to_mock_server(strict=strict).test_many(sent)
    fused = factory().to_mock_server(strict=strict, fuse=True).test_many(sent)
    assert comparable(*fused) == comparable(*plain) and len(comparable(*plain)) > 5


@pytest.mark.kafka
def test_a_fused_deployment_answers_as_the_mock_server(kafka, monkeypatch):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    graph = parity_graph()
    with graph.deploy(kafka, fuse=True) as deployment:
        assert "models" not in [a.name for a in deployment.plan.agents]
        answers_as_mock(deployment, graph.to_mock_server(strict=True), parity_requests()[:15])


def probability(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "p": np.float32(0.1), "pair": (1, 2)}


def percent(body: dict[str, Any]) -> dict[str, Any]:
    body["pair"].append(3)  # a list after a Kafka hop, so after a fused one too
    return {**body, "inputs": [[body["p"] * 100 + len(body["pair"])]]}  # float64 after a hop, not float32


class Fragile(Step):
    """Crashes on a whole batch holding the request ``crash``."""

    def process(self, events: list[Event]) -> list[Outcome]:
        if any(event.id == "crash" for event in events):
            raise RuntimeError("fragile")
        return [Emit(event) for event in events]


def fusable_graph() -> Graph:
    """probability -> percent, and an ensemble whose join feeds a step that can crash."""
    graph = Graph(run_name("fusable"))
    router = graph.to("probability", probability).to("percent", percent).to_router("models", default="ens")
    router.add_model("one", Constant, value=1.0).add_model("scaled", Scaled)
    router.add_model("ens", VotingEnsemble(["one", "scaled"], vote="regression"))
    graph["models"].to("post", Fragile())
    return graph


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
def test_fused_steps_see_bodies_as_a_kafka_hop_delivers_them_and_fail_alone(strict):
    fused_plan = build_plan(fusable_graph(), fuse=True)
    assert "percent" not in [agent.name for agent in fused_plan.agents]  # it runs inside `probability`
    assert "post" not in [agent.name for agent in fused_plan.agents]  # ... and inside the join
    requests = [{"id": "fine", "inputs": [[1.0]]}, {"id": "crash", "inputs": [[1.0]]}]
    answers = {}
    for fuse in (False, True):
        server = fusable_graph().to_mock_server(strict=strict, fuse=fuse)
        answers[fuse] = [comparable(*server.test_many([MockRequest(body)])) for body in requests]
    assert answers[True] == answers[False]
    fine, crashed = answers[False]
    assert fine["fine"]["outputs"] == [(float(np.float32(0.1)) * 100 + 3 + 1.0) / 2]
    assert crashed == {"crash": ("post", "StepError")}
