"""Operator fusion (chosen at deploy time): cheap stateless steps run inside the agents that feed
them; the answers stay exactly those of the unfused graph, on the mock server and over Kafka."""

from __future__ import annotations

import time

import pytest
from graphs import mlrun_graph, parity_graph
from test_deploy import answers_as_mock
from test_mlrun_compat import REQUESTS as MLRUN_REQUESTS
from test_parity import comparable
from test_parity import requests as parity_requests

from examples.iris.iris import build
from pipeline.mock import MockRequest
from pipeline.plan import build_plan


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
