"""Trace context: a W3C traceparent on a request reaches its answer (through a router, an
ensemble's fan-out and its join) and its dead letter; with the OpenTelemetry SDK configured,
each agent records one span per event, a child of that traceparent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from observed_graphs import observed_graph
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.client import Received, Request, consume, produce
from pipeline.plan import Plan, build_plan
from pipeline.runner import run_agents
from pipeline.topics import create_topics, load_topic_configs

pytestmark = pytest.mark.kafka
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's OpenTelemetry SDK (set once per process), recording into memory."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter


def test_traceparent_reaches_the_answer_and_the_dead_letter_with_a_span_per_hop(
    kafka: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", f"t{time.time_ns()}")
    plan = build_plan(observed_graph())
    headers = {"traceparent": TRACEPARENT, "tracestate": b"vendor=1"}
    answered = Request({"id": "traced", "inputs": [[2.0]]}, headers={**headers, "model": b"ens"})
    failed = Request({"id": "traced-bad", "inputs": [[2.0]]}, headers={**headers, "model": b"nope"})
    records = asyncio.run(_deploy_and_send(kafka, plan, [answered, failed]))

    answer, letter = records[plan.sink], records[plan.dlq]
    assert answer.body["outputs"] == [2.0] and answer.event_id == "traced"
    assert letter.event_id == "traced-bad" and letter.headers["error_type"] == b"RoutingError"
    for record in (answer, letter):
        assert (record.headers["traceparent"], record.headers["tracestate"]) == (TRACEPARENT, b"vendor=1")

    mine = [s for s in spans.get_finished_spans() if s.attributes["streamserve.event.id"] in ("traced", "traced-bad")]
    by_agent = {(s.attributes["streamserve.agent"], s.attributes["streamserve.event.id"]) for s in mine}
    hops = {("keep", "traced"), ("models", "traced"), ("ens", "traced"), ("one", "traced"), ("three", "traced")}
    assert hops | {("ens.join", "traced"), ("keep", "traced-bad"), ("models", "traced-bad")} <= by_agent
    for span in mine:
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
        assert span.attributes["streamserve.graph"] == plan.graph.name
    routed = [s for s in mine if s.attributes["streamserve.agent"] == "models"]
    assert {s.attributes["streamserve.event.id"]: s.status.is_ok for s in routed} == {
        "traced": True,
        "traced-bad": False,
    }


async def _deploy_and_send(kafka: str, plan: Plan, requests: list[Request]) -> dict[str, Received]:
    await create_topics(kafka, load_topic_configs(plan))
    stopping = asyncio.Event()
    agents = asyncio.ensure_future(run_agents(plan, kafka, stopping=stopping))
    found: dict[str, Received] = {}
    try:
        ids = {request.id for request in requests}

        async def read() -> None:
            async for topic, record in consume(
                kafka, [plan.sink, plan.dlq], timeout_s=90, until=lambda: len(found) == 2
            ):
                if record.event_id in ids:
                    found[topic] = record

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(1.0)
        await produce(kafka, plan.source, requests)
        await reader
    finally:
        stopping.set()
        await asyncio.wait_for(agents, 30)
    assert set(found) == {plan.sink, plan.dlq}, found
    return found
