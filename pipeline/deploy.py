"""graph.deploy(): a graph's agents as worker processes on this machine, against Kafka (the
embedded broker unless told otherwise), with MLRun's invoke() to call it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.client import Request
from pipeline.errors import DeploymentError
from pipeline.events import new_event_id
from pipeline.kafka_config import KafkaConfigLike, resolve
from pipeline.plan import build_plan
from pipeline.replies import Replies
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics

if TYPE_CHECKING:
    from pipeline.broker import EmbeddedKafka
    from pipeline.graph import Graph

logger = logging.getLogger(__name__)
READY_TIMEOUT_S = 120.0


@dataclass
class AgentStatus:
    """One agent of a deployment: its consumer group, live workers and consumer lag."""

    name: str
    group: str
    workers: list[int] = field(default_factory=list)  # process ids
    lag: int | None = None  # records not yet committed, over all partitions (None: unknown)


@dataclass
class DeploymentStatus:
    """Where a deployment stands."""

    bootstrap: str
    agents: list[AgentStatus]


class Deployment:
    """A deployed graph: :meth:`invoke` it, watch :meth:`status`, :meth:`scale` a step, :meth:`stop`."""

    def __init__(
        self,
        graph: Graph,
        bootstrap: str | None = None,
        *,
        workers: Mapping[str, int] | None = None,
        kafka_config: KafkaConfigLike = None,
        topics: str | Path | None = None,
        fuse: bool = False,
    ) -> None:
        self.graph, self.plan, self.fuse = graph, build_plan(graph, fuse=fuse), fuse
        self.config = resolve(kafka_config)
        counts = {agent.name: 1 for agent in self.plan.agents}
        for name, count in (workers or {}).items():
            if name not in counts:
                raise DeploymentError(f"graph {graph.name!r} has no step {name!r}; steps: {', '.join(counts)}")
            counts[name] = int(count)
        self._dir = Path(tempfile.mkdtemp(prefix=f"streamserve-deploy-{graph.name}-"))
        self._broker: EmbeddedKafka | None = None
        self._replies: Replies | None = None
        self._supervisor: Supervisor | None = None
        self._ports: dict[tuple[str, int], int] = {}
        try:
            self.bootstrap = bootstrap or self._start_broker()
            ensure_topics(self.bootstrap, build_plan(graph), topics, kafka_config=self.config)
            self._supervisor = Supervisor(
                str(self._write_graph()),
                self.bootstrap,
                plan=self.plan,
                log_dir=self._dir / "logs",
                env=self._worker_env(),
                options=["--fuse"] if fuse else [],
            )
            for name, count in counts.items():
                self.scale(name, count, wait=False)
            self._replies = Replies(self.bootstrap, self.plan.source, self.plan.sink, self.plan.dlq, self.config)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    # -- calling it ----------------------------------------------------------------------
    def invoke(
        self,
        path: str = "/",
        body: Any = None,
        *,
        headers: Mapping[str, bytes | str] | None = None,
        key: bytes | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Send one request and return its answer; raises :class:`pipeline.errors.RequestFailed`
        with the dead letter's reason, or TimeoutError (no answer: filtered, or too slow)."""
        return self.invoke_many([(path, body)], headers=headers, key=key, timeout=timeout)[0]

    def invoke_many(
        self,
        requests: Iterable[Any],
        *,
        headers: Mapping[str, bytes | str] | None = None,
        key: bytes | None = None,
        timeout: float = 60.0,
        errors: bool = True,
    ) -> list[Any]:
        """Send every request at once (bodies, or ``(path, body)`` pairs) and return their answers
        in order. With ``errors`` a failure raises; without, it stands in the list as the
        exception it would have raised."""
        assert self._replies is not None
        made = [_request(*(item if isinstance(item, tuple) else ("/", item)), headers, key) for item in requests]
        futures = self._replies.send(made)
        done, missing = concurrent.futures.wait(futures, timeout)
        self._replies.forget([request.id for request, future in zip(made, futures) if future in missing])
        results: list[Any] = []
        for request, future in zip(made, futures):
            try:
                if future not in done:
                    raise TimeoutError(f"no answer to request {request.id!r} within {timeout:g} s (filtered, or slow)")
                results.append(future.result().result())
            except Exception as exc:
                if errors:
                    raise
                results.append(exc)
        return results

    # -- running it ----------------------------------------------------------------------
    def scale(self, step: str, count: int, *, wait: bool = True) -> None:
        """Run ``count`` worker processes of ``step`` (each a member of its consumer group)."""
        assert self._supervisor is not None
        self.plan.agent(step)
        running = sorted(i for (name, i) in self._supervisor.processes if name == step)
        for instance in range(count):
            if instance not in running:
                port = self._ports.setdefault((step, instance), _free_port())
                self._supervisor.start(step, instance, ["--metrics-port", str(port)])
        for instance in running:
            if instance >= count:
                self._supervisor.terminate(step, instance)
                self._ports.pop((step, instance), None)
        if wait:
            self._wait_ready()

    def status(self) -> DeploymentStatus:
        """Every agent with its live workers and consumer lag."""
        assert self._supervisor is not None
        self._supervisor.check()
        lags = asyncio.run(self._lags())
        agents = []
        for agent in self.plan.agents:
            pids = [
                p.pid for (name, _), p in self._supervisor.processes.items() if name == agent.name and p.poll() is None
            ]
            group = f"{self.plan.graph.name}.{agent.name}"
            agents.append(AgentStatus(agent.name, group, pids, lags.get(group)))
        return DeploymentStatus(self.bootstrap, agents)

    def stop(self) -> None:
        """Stop every worker (they commit and leave their groups), the reply reader and an
        embedded broker; remove the deployment's files."""
        if self._replies is not None:
            self._replies.close()
            self._replies = None
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------
    def _start_broker(self) -> str:
        from pipeline.broker import EmbeddedKafka

        if self.config.security_protocol != "PLAINTEXT":
            raise DeploymentError(
                "the embedded broker is plaintext: give the bootstrap of the cluster the config is for"
            )
        self._broker = EmbeddedKafka()
        self._broker.start()
        return self._broker.bootstrap

    def _write_graph(self) -> Path:
        text = self.graph.to_yaml()
        if "__main__:" in text:
            raise DeploymentError(
                f"graph {self.graph.name!r} uses classes or functions defined in __main__ (a notebook or a "
                "script), which worker processes cannot import: move them to a module"
            )
        path = self._dir / f"{self.graph.name}.yaml"
        path.write_text(text)
        return path

    def _worker_env(self) -> dict[str, str]:
        paths = [p for p in sys.path if p and Path(p).is_dir()]  # workers import what this process can
        env = {"PYTHONPATH": os.pathsep.join(paths)}
        if self.config.security_protocol != "PLAINTEXT":
            config_file = self._dir / "kafka.properties"
            config_file.touch(0o600)
            config_file.write_text("".join(f"{k}={v}\n" for k, v in self.config.to_properties().items()))
            config_file.chmod(0o600)
            env["STREAMSERVE_KAFKA_CONFIG"] = str(config_file)
        return env

    def _wait_ready(self) -> None:
        """Wait until every worker says it is ready (every agent joined its group and consumes);
        a worker that exits meanwhile fails the wait with the end of its log."""
        assert self._supervisor is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        for (name, instance), port in list(self._ports.items()):
            while not _ready(port):
                process = self._supervisor.processes.get((name, instance))
                if process is not None and process.poll() not in (None, 0):
                    log = self._dir / "logs" / f"{name}.{instance}.log"
                    tail = (
                        "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
                        if log.is_file()
                        else ""
                    )
                    raise DeploymentError(f"worker {instance} of {name!r} exited with {process.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise DeploymentError(
                        f"worker {instance} of {name!r} not ready within {READY_TIMEOUT_S:g} s; logs in {self._dir}"
                    )
                time.sleep(0.2)

    async def _lags(self) -> dict[str, int]:
        """Per consumer group: its input's end offsets minus its committed offsets."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        options = self.config.client_options()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **options)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **options)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, **options)
        for client in (admin, producer, consumer):
            await client.start()
        try:
            lags: dict[str, int] = {}
            for agent in self.plan.agents:
                group = f"{self.plan.graph.name}.{agent.name}"
                partitions = [TopicPartition(agent.input, p) for p in await producer.partitions_for(agent.input)]
                ends = await consumer.end_offsets(partitions)
                committed = await admin.list_consumer_group_offsets(group)
                lags[group] = sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
            return lags
        finally:
            for client in (consumer, producer, admin):
                await client.close() if client is admin else await client.stop()


def _request(path: str, body: Any, headers: Mapping[str, bytes | str] | None, key: bytes | None) -> Request:
    body = {} if body is None else body
    encoded = {name: value.encode() if isinstance(value, str) else value for name, value in (headers or {}).items()}
    if path != "/":
        encoded["path"] = path.encode()
    if isinstance(body, dict):
        return Request({**body, "id": str(body.get("id") or new_event_id())}, key=key, headers=encoded)
    return Request({"id": new_event_id()}, key=key, headers=encoded, raw=json.dumps(body).encode())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False
