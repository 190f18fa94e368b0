"""Tracing: with the OpenTelemetry SDK configured in a worker (a TracerProvider set, e.g. by
``opentelemetry-instrument``), each agent records one span per event, a child of the request's
W3C ``traceparent`` header (which every hop, answer and dead letter carries as it came).
Without OpenTelemetry, or with only its API, nothing is recorded and nothing needs setting up."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pipeline.runtime.sensors import Sensors
from steps.base import Fail

if TYPE_CHECKING:
    from pipeline.events import Event
    from pipeline.plan import Plan
    from steps.base import Outcome

__all__ = ["TRACEPARENT", "Tracing"]

logger = logging.getLogger(__name__)
TRACEPARENT = "traceparent"


class _Headers:
    """OpenTelemetry's getter over an event's headers (bytes values)."""

    def get(self, carrier: dict[str, bytes | None], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value.decode(errors="replace")]

    def keys(self, carrier: dict[str, bytes | None]) -> list[str]:
        return list(carrier)


class Tracing(Sensors):
    """One span per event per agent, from the start of its step's batch to the step's end."""

    def __init__(self, plan: Plan, tracer: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.graph, self.tracer = plan.graph.name, tracer
        self.inputs = {agent.name: agent.input for agent in plan.agents}
        self._propagator, self._getter = TraceContextTextMapPropagator(), _Headers()
        self._seconds = 0.0

    @classmethod
    def configured(cls, plan: Plan) -> Tracing | None:
        """Tracing for ``plan`` when an OpenTelemetry SDK tracer provider is set, else None."""
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        logger.info("OpenTelemetry: one span per event per agent of graph %s", plan.graph.name)
        return cls(plan, provider.get_tracer("streamserve"))

    def step_done(self, agent: str, events: int, outcomes: int, seconds: float) -> None:
        self._seconds = seconds

    def stepped(self, agent: str, events: list[Event], outcomes: list[Outcome]) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = time.time_ns()
        start = end - int(self._seconds * 1e9)
        results: dict[str, Outcome] = {outcome.event.uid: outcome for outcome in outcomes}
        for event in events:
            outcome = results.get(event.uid)
            parent = self._propagator.extract(event.headers, getter=self._getter)  # type: ignore[arg-type]
            span = self.tracer.start_span(
                f"{self.graph}.{agent} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                start_time=start,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation": "process",
                    "messaging.destination.name": self.inputs.get(agent, ""),
                    "streamserve.graph": self.graph,
                    "streamserve.agent": agent,
                    "streamserve.event.id": event.id,
                    "streamserve.event.uid": event.uid,
                    "streamserve.outcome": _outcome(outcome),
                },
            )
            if isinstance(outcome, Fail):
                span.set_status(Status(StatusCode.ERROR, f"{outcome.error.error_type}: {outcome.error.message:.200}"))
            span.end(end_time=end)


def _outcome(outcome: Outcome | None) -> str:
    if outcome is None:
        return "none"  # filtered out, or held by a join
    return "failed" if isinstance(outcome, Fail) else "emitted"
