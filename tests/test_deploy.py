"""graph.deploy() and invoke(): the MLRun deploy-then-invoke experience over real Kafka."""

from __future__ import annotations

import os
import time

import pytest
from graphs import mlrun_graph, parity_graph
from test_parity import requests as parity_requests

from pipeline import Graph, RequestFailed
from pipeline.errors import DeploymentError

pytestmark = pytest.mark.kafka


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] == "Z"


def test_deploy_invoke_scale_status_and_stop(kafka, monkeypatch):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    graph = mlrun_graph()
    mock = graph.to_mock_server(strict=True)
    with graph.deploy(kafka, workers={"m1": 2}) as deployment:
        assert deployment.invoke("/v2/models/m1/infer", {"inputs": [5]})["outputs"] == 500
        answer = deployment.invoke(body={"model": "m3", "inputs": [5], "id": "abc"})
        expected = mock.test(body={"model": "m3", "inputs": [5], "id": "abc"})
        assert {**answer, "timestamp": None} == {**expected, "timestamp": None}
        with pytest.raises(RequestFailed, match="has no version 'v9'") as failure:
            deployment.invoke("/v2/models/m3/versions/v9/infer", {"inputs": [5]})
        assert (failure.value.step, failure.value.error_type) == ("models", "RoutingError")
        many = deployment.invoke_many([{"model": "m2", "inputs": [n]} for n in range(50)], errors=False)
        assert [a["outputs"] for a in many] == [200 * n for n in range(50)]
        status = {agent.name: agent for agent in deployment.status().agents}
        assert len(status["m1"].workers) == 2 and len(status["m2"].workers) == 1
        assert status["m2"].lag == 0 and status["models"].group == f"{graph.name}.models"
        deployment.scale("m2", 3)
        assert len({a.name: a for a in deployment.status().agents}["m2"].workers) == 3
        assert deployment.invoke(body={"model": "m2", "inputs": [1]})["outputs"] == 200
        pids = [pid for agent in deployment.status().agents for pid in agent.workers]
    assert pids and all(_gone(pid) for pid in pids)


def answers_as_mock(deployment, mock, sent) -> None:
    """Each of ``sent`` (body, headers) answered over Kafka as ``mock`` answers it: the same answer,
    the same failure (step and type), or no answer for a filtered request."""
    for body, headers in sent:
        expected = mock.test(body=body, headers=headers)
        if expected is None:  # filtered: no answer comes
            with pytest.raises(TimeoutError):
                deployment.invoke(body=body, headers=headers, timeout=3)
        elif "error_type" in expected:
            with pytest.raises(RequestFailed) as failure:
                deployment.invoke(body=body, headers=headers)
            assert (failure.value.step, failure.value.error_type) == (expected["step"], expected["error_type"])
        else:
            answer = deployment.invoke(body=body, headers=headers)
            assert {**answer, "timestamp": None} == {**expected, "timestamp": None}


def test_deploy_answers_a_whole_graph_as_the_mock_server(kafka, monkeypatch):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    graph = parity_graph()
    with graph.deploy(kafka) as deployment:
        answers_as_mock(deployment, graph.to_mock_server(strict=True), parity_requests()[:12])


def test_a_graph_from_a_notebook_is_refused_with_a_clear_error(kafka):
    class Local:
        def do(self, body):
            return body

    Local.__module__, Local.__qualname__ = "__main__", "Local"  # as a notebook defines it
    graph = Graph("notebook")
    graph.to("local", Local)
    with pytest.raises(DeploymentError, match="defined in __main__"):
        graph.deploy(kafka)
