"""Health of one worker process, and its HTTP endpoint: ``/metrics`` (Prometheus text format),
``/healthz`` (the process is alive) and ``/readyz`` (every agent has joined its group and is
consuming)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from pipeline.errors import DeploymentError
from pipeline.runtime.sensors import Sensors
from pipeline.runtime.transport import TopicPartition

__all__ = ["Health", "HealthServer"]

logger = logging.getLogger(__name__)


class Health(Sensors):
    """Which of ``agents`` have joined their group (got an assignment) and poll their topic."""

    def __init__(self, agents: Iterable[str]) -> None:
        self.agents = list(agents)
        self._joined: set[str] = set()
        self._polling: set[str] = set()

    def assigned(self, agent: str, partitions: set[TopicPartition]) -> None:
        self._joined.add(agent)

    def started(self, agent: str) -> None:
        self._polling.add(agent)

    def stopped(self, agent: str) -> None:
        self._polling.discard(agent)
        self._joined.discard(agent)

    def state(self, agent: str) -> str:
        """``consuming``, ``joining`` (polling, no assignment yet) or ``starting``."""
        if agent in self._polling:
            return "consuming" if agent in self._joined else "joining"
        return "starting"

    @property
    def ready(self) -> bool:
        """Whether every agent is consuming."""
        return all(self.state(agent) == "consuming" for agent in self.agents)


class HealthServer:
    """Serves ``/metrics`` from ``registry`` and ``/healthz``, ``/readyz`` from ``health`` on
    ``port`` (0: any free port; see :attr:`port`) in a daemon thread, on every interface."""

    def __init__(self, port: int, registry: CollectorRegistry, health: Health, *, host: str = "") -> None:
        handler = _handler(registry, health)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise DeploymentError(f"cannot serve metrics on port {port}: {exc}; pass another --metrics-port") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamserve-metrics", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Start answering."""
        self._thread.start()
        logger.info("metrics on http://0.0.0.0:%d/metrics, health on /healthz and /readyz", self.port)
        return self

    def stop(self) -> None:
        """Stop answering and free the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    def metrics(request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return 200, content_type, encoder(registry)

    def healthz(request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        return 200, "text/plain; charset=utf-8", b"ok\n"

    def readyz(request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        body = {"ready": health.ready, "agents": {agent: health.state(agent) for agent in health.agents}}
        return (200 if health.ready else 503), "application/json", json.dumps(body).encode() + b"\n"

    routes: dict[str, Callable[[BaseHTTPRequestHandler], tuple[int, str, bytes]]] = {
        "/metrics": metrics,
        "/healthz": healthz,
        "/readyz": readyz,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, content_type, body = route(self) if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not news
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler
