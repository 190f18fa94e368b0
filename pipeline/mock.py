"""MockServer: a whole graph in-process, through the same delivery loop as a deployment, over
an in-memory broker instead of Kafka."""

from __future__ import annotations

import json
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
from pipeline.runtime.memory import MemoryBroker, MemoryRecord, PartitionLog, run_now
from pipeline.runtime.memory_transport import MemoryTransport
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
    topics of 4 partitions, so what passes here passes deployed; ``fuse`` runs the plan a
    ``--fuse`` deployment runs. Failed events come back as error records, read from the
    dead-letter topic.
    """

    def __init__(
        self, graph: Graph, *, strict: bool = False, fuse: bool = False, sensors: Sensors | None = None
    ) -> None:
        self.graph, self.strict = graph, strict
        self.plan = build_plan(graph, fuse=fuse)
        self.broker = MemoryBroker(partitions=STRICT_PARTITIONS if strict else 1)
        settings = AgentSettings(commit_interval_ms=0 if strict else None, instance="mock")
        self._batch = settings.max_batch_size
        wire_type = BytesWire if strict else ObjectWire
        self._loops: list[AgentLoop] = []
        for agent in self.plan.agents:
            agent.step.setup()
            loop = AgentLoop(
                self.plan,
                agent,
                MemoryTransport(self.broker, batch_bytes=settings.batch_bytes),
                settings=settings,
                wire=wire_type(self.plan.source, self.plan.sink, self.plan.id_keyed_topics),
                sensors=sensors,
                inline=True,
            )
            run_now(loop.start())
            self._loops.append(loop)
        self._holders = [loop for loop in self._loops if type(loop.agent.step).held is not Step.held]
        self._readers: dict[str, list[AgentLoop]] = {}
        for loop in self._loops:
            self._readers.setdefault(loop.agent.input, []).append(loop)
        self._source = self.broker.topic(self.plan.source)
        self._sink, self._dlq = self.broker.topic(self.plan.sink), self.broker.topic(self.plan.dlq)
        self._models = {key: model for router in graph.routers() for key, (model, _, _) in router.models.items()}

    def test(
        self,
        path: str = "/",
        body: Any = None,
        *,
        method: str | None = None,
        content_type: str | None = None,
        headers: Mapping[str, bytes | str] | None = None,
        key: bytes | None = None,
    ) -> Any:
        """Answer a V2 request as the deployment would: infer, explain, custom operations,
        ``GET /v2/models/<m>`` (metadata) through the graph; ``/``, ``/v2/health``,
        ``/v2/models`` (the model list) and ``.../ready`` directly.

        ``method`` defaults to POST with a body, GET without. A str or bytes body is decoded as
        JSON unless ``content_type`` says otherwise (as MLRun's mock server does). Returns the
        output topic's body (a list when the graph emits several, None when the event was
        filtered) or, for a failed event, its error record as a dict.
        """
        method = (method or ("POST" if body is not None else "GET")).upper()
        clean = path.rstrip("/") or "/"
        if clean == "/v2/models":
            return {"models": [_listing(key, model) for key, model in self._models.items()]}
        if method == "GET" and (clean == "/" or clean.startswith("/v2/health")):
            return {"name": self.graph.name, "version": "v2", "extensions": []}
        named = parse_path(path)
        if named.model is not None and not _serves(self._models, named.model):
            raise ProtocolError(f"no model {named.model!r}; models: {', '.join(self._models) or '(none)'}")
        if named.operation == "ready":
            model = self._models.get(f"{named.model}:{named.version}") or self._models.get(named.model or "")
            return {"name": named.model, "ready": bool(getattr(model, "ready", True))}
        if method == "GET" and named.model is not None and named.operation is None:
            path = f"{clean}/metadata"
        body = _decoded(body, content_type)
        outputs, errors = self._run(((({} if body is None else body), path, headers, key),))
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
        return self._run((request.body, request.path, request.headers, request.key) for request in requests)

    def _run(self, requests: Iterable[tuple[Any, str, Mapping[str, bytes | str] | None, bytes | None]]) -> Any:
        requests = list(requests)
        for _, _, _, key in requests:  # all checked before any is sent
            if key is not None and not isinstance(key, bytes):
                raise ProtocolError(f"a request's key must be bytes or None, not {type(key).__name__} ({key!r:.60})")
        broker, sink, dlq = self.broker, self._sink, self._dlq
        sink_start, dlq_start = [log.end for log in sink], [log.end for log in dlq]
        for body, path, headers, key in requests:
            pairs = [
                (name, value.encode() if isinstance(value, str) else value) for name, value in (headers or {}).items()
            ]
            if path != "/":
                pairs.append(("path", path.encode()))
            partition = broker.partition_of(self.plan.source, key)
            broker.append(self.plan.source, partition, key, encode_response(body) if self.strict else body, pairs)
        self._drain()
        outputs = [record.value for record in _after(sink, sink_start)]
        if self.strict:
            outputs = [decode_response(value) for value in outputs]
        errors = [error_from_headers(record.headers) for record in _after(dlq, dlq_start)]
        broker.drop_read()
        return outputs, errors

    def _drain(self) -> None:
        run_now(self._run_agents())

    async def _run_agents(self) -> None:
        """Run the agents of each topic written to, in the order topics were written, until none
        is left; then close what joins still hold (their timeouts, which a deployment would reach
        later) and run on."""
        appended, readers, batch = self.broker.appended, self._readers, self._batch
        while True:
            while appended:
                topic = next(iter(appended))
                del appended[topic]
                for loop in readers.get(topic, ()):
                    while await loop.poll_once(0) >= batch:  # a shorter batch: all was read
                        pass
            held = [loop for loop in self._holders if any(loop.agent.step.held())]
            if not held:
                return
            for loop in held:
                await loop.expire_all()


def _after(logs: list[PartitionLog], start: list[int]) -> list[MemoryRecord]:
    """The records of ``logs`` (a topic's partitions) from ``start`` (an offset per partition) on."""
    if len(logs) == 1:
        return logs[0][start[0] - logs[0].base :]
    return [record for log, offset in zip(logs, start) for record in log[offset - log.base :]]


def _decoded(body: Any, content_type: str | None) -> Any:
    """A str or bytes body decoded as JSON when ``content_type`` is empty or JSON."""
    if not isinstance(body, (str, bytes)) or content_type not in (None, "", "json", "application/json"):
        return body
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if content_type:
            raise ProtocolError(f"failed to decode the body as JSON: {exc}") from exc
        return body


def _serves(models: Mapping[str, Any], name: str) -> bool:
    return name in models or any(key.startswith(f"{name}:") for key in models)


def _listing(key: str, model: Any) -> dict[str, Any]:
    name, _, version = key.partition(":")
    return {"name": name, "version": version or getattr(model, "version", None)}
