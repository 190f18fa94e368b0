"""MockServer: a whole graph in-process, through the same delivery loop as a deployment, over
an in-memory broker instead of Kafka."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.codec import decode_response, encode_response
from pipeline.errors import ProtocolError
from pipeline.graph import Graph
from pipeline.plan import build_plan
from pipeline.protocol import parse_path
from pipeline.runtime.deadletter import error_from_headers
from pipeline.runtime.loop import AgentLoop
from pipeline.runtime.memory import MemoryBroker, MemoryTransport, key_partition, run_now
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.settings import AgentSettings
from pipeline.runtime.wire import BytesWire, ObjectWire
from steps.base import Step

STRICT_PARTITIONS = 4  # topics.yaml's default partition count


@dataclass
class MockRequest:
    """One request for :meth:`MockServer.test_many`."""

    body: Any
    path: str = "/"
    headers: Mapping[str, bytes | str] = field(default_factory=dict)
    key: bytes | None = None


class MockServer:
    """Runs a graph without a broker: every topic of the deployment is an in-memory topic and
    every agent runs the deployment's delivery loop over it.

    By default events travel between steps as objects (no encoding: fast); ``strict=True``
    encodes every hop as Kafka would (JSON requests, msgpack envelopes, JSON answers) over
    topics of 4 partitions, so what passes here passes deployed. Failed events come back as
    error records, read from the dead-letter topic.
    """

    def __init__(self, graph: Graph, *, strict: bool = False, sensors: Sensors | None = None) -> None:
        self.graph, self.strict = graph, strict
        self.plan = build_plan(graph)
        self.broker = MemoryBroker(partitions=STRICT_PARTITIONS if strict else 1)
        settings = AgentSettings(commit_interval_ms=0 if strict else None, instance="mock")
        wire_type = BytesWire if strict else ObjectWire
        self._loops: list[AgentLoop] = []
        for agent in self.plan.agents:
            agent.step.load()
            loop = AgentLoop(
                self.plan,
                agent,
                MemoryTransport(self.broker),
                settings=settings,
                wire=wire_type(self.plan.source, self.plan.sink, self.plan.id_keyed_topics),
                sensors=sensors,
                inline=True,
            )
            run_now(loop.start())
            self._loops.append(loop)
        self._holders = [loop for loop in self._loops if type(loop.agent.step).held is not Step.held]
        self._models = {key: model for router in graph.routers() for key, (model, _, _) in router.models.items()}

    def test(
        self,
        path: str = "/",
        body: Any = None,
        *,
        headers: Mapping[str, bytes | str] | None = None,
        key: bytes | None = None,
    ) -> Any:
        """Answer a V2 request: infer/explain through the graph, or ready/list directly.

        Returns the sink's body (a list when the graph emits several, None when the event
        was filtered) or, for a failed event, its error record as a dict.
        """
        if path.rstrip("/") == "/v2/models":
            return {"models": [{"name": k, "version": getattr(m, "version", None)} for k, m in self._models.items()]}
        named = parse_path(path)
        if named.model is not None and named.model not in self._models:
            raise ProtocolError(f"no model {named.model!r}; models: {', '.join(self._models) or '(none)'}")
        if named.operation == "ready":
            return {"name": named.model, "ready": True}
        outputs, errors = self.run([MockRequest({} if body is None else body, path, headers or {}, key)])
        if not outputs:
            if not errors:
                return None
            return errors[0] if len(errors) == 1 else errors
        return outputs[0] if len(outputs) == 1 else outputs

    def test_many(self, requests: Iterable[MockRequest]) -> tuple[list[Any], list[dict[str, Any]]]:
        """Send every request at once (agents then take them in batches, as over Kafka); every
        answer and error record, in the order they came out."""
        return self.run(requests)

    def run(self, requests: Iterable[MockRequest]) -> tuple[list[Any], list[dict[str, Any]]]:
        """Produce ``requests`` to the source topic and run every agent until none has work."""
        plan, broker = self.plan, self.broker
        sink_start, dlq_start = _ends(broker, plan.sink), _ends(broker, plan.dlq)
        partitions = len(broker.topic(plan.source))
        for request in requests:
            pairs = [
                (name, value.encode() if isinstance(value, str) else value) for name, value in request.headers.items()
            ]
            if request.path != "/":
                pairs.append(("path", request.path.encode()))
            value = encode_response(request.body) if self.strict else request.body
            partition = 0 if request.key is None else key_partition(request.key, partitions)
            broker.append(plan.source, partition, request.key, value, pairs)
        self._drain()
        outputs = [self._answer(record.value) for record in _after(broker, plan.sink, sink_start)]
        errors = [error_from_headers(record.headers) for record in _after(broker, plan.dlq, dlq_start)]
        return outputs, errors

    def _answer(self, value: Any) -> Any:
        return decode_response(value) if self.strict else value

    def _drain(self) -> None:
        """Run agents while any has records to read; then close what joins still hold (their
        timeouts, which a deployment would reach later) and run on."""
        while True:
            busy = True
            while busy:  # agents in plan order: a chain drains in one pass
                busy = False
                for loop in self._loops:
                    while loop.transport.pending():  # type: ignore[attr-defined]
                        run_now(loop.poll_once(0))
                        busy = True
            held = [loop for loop in self._holders if any(loop.agent.step.held())]
            if not held:
                return
            for loop in held:
                run_now(loop.expire_all())


def _ends(broker: MemoryBroker, topic: str) -> list[int]:
    return [len(log) for log in broker.topic(topic)]


def _after(broker: MemoryBroker, topic: str, start: list[int]) -> list[Any]:
    return [record for log, offset in zip(broker.topic(topic), start) for record in log[offset:]]
