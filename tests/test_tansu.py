"""Smoke tests on Tansu, the no-Java fallback broker (memory only, no transactions)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from pipeline.broker import TansuBroker
from pipeline.demo import drive, example_reference, make_requests
from pipeline.errors import DeploymentError
from pipeline.loading import load_graph
from pipeline.plan import build_plan
from pipeline.runner import agent_loop
from pipeline.runtime.settings import AgentSettings
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS") is not None, reason="an external cluster was given; Tansu not needed"
    ),
]


@pytest.fixture(scope="module")
def tansu():
    with TansuBroker() as broker:
        yield broker.bootstrap


def test_the_demo_graph_answers_on_tansu(tansu, tmp_path):
    reference = example_reference()
    plan = build_plan(load_graph(reference))
    ensure_topics(tansu, plan)
    with Supervisor(reference, tansu, plan=plan, log_dir=tmp_path).start_all():
        summary, _, _ = asyncio.run(drive(tansu, reference, make_requests(60, bad_every=20), timeout_s=120))
    assert (summary.answered, summary.dead_letters, summary.missing, summary.mismatches) == (57, 3, 0, 0)


def test_exactly_once_on_tansu_fails_at_start_with_a_clear_error(tansu, monkeypatch):
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", str(time.time_ns()))
    plan = build_plan(load_graph(f"{Path(__file__).parent / 'graphs.py'}:exactly_once_graph"))
    loop = agent_loop(plan, plan.agent("echo"), tansu, AgentSettings(), None)
    with pytest.raises(DeploymentError, match="did not accept a transactional producer"):
        asyncio.run(loop.run(asyncio.Event()))
