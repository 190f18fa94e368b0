"""MockServer: a whole graph in-process, through the same step objects and routes."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from pipeline.errors import ProtocolError
from pipeline.events import ErrorRecord, Event, new_event_id
from pipeline.graph import Graph
from pipeline.plan import Agent, build_plan
from pipeline.protocol import parse_path
from steps.base import Emit, Outcome, Step

logger = logging.getLogger(__name__)


class MockServer:
    """Runs a graph without a broker: each topic of the deployment is an in-memory queue.

    Steps see exactly the events they would see over Kafka (one at a time here),
    joins and ensembles meet by event id, and failures come back as error
    records instead of going to the dead-letter topic.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.plan = build_plan(graph)
        self._consumers: dict[str, list[Agent]] = {}
        for agent in self.plan.agents:
            self._consumers.setdefault(agent.input, []).append(agent)
            agent.step.load()
        self._holders = [a for a in self.plan.agents if type(a.step).expire is not Step.expire]
        self._models = {key: model for router in graph.routers() for key, (model, _, _) in router.models.items()}

    def test(
        self,
        path: str = "/",
        body: Any = None,
        *,
        headers: dict[str, bytes | str] | None = None,
        key: bytes | None = None,
    ) -> Any:
        """Answer a V2 request: infer/explain through the graph, or ready/list directly.

        Returns the sink's body (a list when the graph emits several, None when
        the event was filtered) or, for a failed event, its error record as a dict.
        """
        if path.rstrip("/") == "/v2/models":
            return {"models": [{"name": k, "version": getattr(m, "version", None)} for k, m in self._models.items()]}
        named = parse_path(path)
        if named.model is not None and named.model not in self._models:
            raise ProtocolError(f"no model {named.model!r}; models: {', '.join(self._models) or '(none)'}")
        if named.operation == "ready":
            return {"name": named.model, "ready": True}
        if body is None:
            body = {}
        event_id = body.get("id") if isinstance(body, dict) else None
        encoded = {k: v.encode() if isinstance(v, str) else v for k, v in (headers or {}).items()}
        event = Event(body, str(event_id or new_event_id()), path, key, encoded)
        outputs, errors = self.run(event)
        if not outputs:
            if not errors:
                return None
            return errors[0] if len(errors) == 1 else errors
        return outputs[0] if len(outputs) == 1 else outputs

    def run(self, event: Event) -> tuple[list[Any], list[dict[str, Any]]]:
        """Send ``event`` through the graph; the sink's bodies and the error records."""
        queue: deque[tuple[str, Event]] = deque([(self.plan.source, event)])
        outputs: list[Any] = []
        errors: list[dict[str, Any]] = []
        while True:
            while queue:
                topic, current = queue.popleft()
                if topic == self.plan.sink:
                    outputs.append(current.body)
                    continue
                consumers = self._consumers[topic]
                delivered = [current, *(current.copy() for _ in consumers[1:])]
                for agent, event in zip(consumers, delivered):
                    self._dispatch(agent, agent.step.process([event]), queue, errors)
            if not self._holders:
                return outputs, errors
            expired = [(agent, agent.step.expire(float("inf"))) for agent in self._holders]
            if not any(outcomes for _, outcomes in expired):
                return outputs, errors
            for agent, outcomes in expired:
                self._dispatch(agent, outcomes, queue, errors)

    def _dispatch(self, agent: Agent, outcomes: list[Outcome], queue: deque, errors: list) -> None:
        for outcome in outcomes:
            event = outcome.event
            if isinstance(outcome, Emit):
                targets = agent.targets(event, outcome.route)
                queue.append((targets[0], event))
                for topic in targets[1:]:
                    queue.append((topic, event.copy()))
                continue
            reply = agent.reply_topic(event)
            if reply is not None:
                event.meta["failed"] = f"{outcome.error.error_type}: {outcome.error.message}"
                queue.append((reply, event))
                continue
            errors.append(self._report(outcome.error))

    def _report(self, error: ErrorRecord) -> dict[str, Any]:
        record = error.to_dict()
        if self.graph.on_error is not None:
            try:
                self.graph.on_error(record)
            except Exception:
                logger.exception("error handler of graph %r failed on %r", self.graph.name, record)
        return record
