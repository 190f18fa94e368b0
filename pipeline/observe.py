"""What a worker process reports besides its answers: metrics and health on an HTTP port (with
``metrics_port``), spans when OpenTelemetry is configured, and the sensors that feed them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, disable_created_metrics

from pipeline.health import Health, HealthServer
from pipeline.kafka_config import KafkaConfig
from pipeline.metrics import LAG_INTERVAL_S, Metrics
from pipeline.plan import Plan
from pipeline.runtime.sensors import Fanout, Sensors
from pipeline.tracing import Tracing

__all__ = ["observing"]


@contextlib.asynccontextmanager
async def observing(
    plan: Plan,
    agents: Sequence[str],
    bootstrap: str,
    config: KafkaConfig,
    *,
    metrics_port: int | None = None,
    sensors: Sensors | None = None,
    lag_interval_s: float = LAG_INTERVAL_S,
) -> AsyncIterator[Sensors | None]:
    """The sensors the named ``agents`` of ``plan`` should report to (None: nothing listens):
    ``sensors`` if given, :class:`pipeline.tracing.Tracing` when OpenTelemetry is configured,
    and with ``metrics_port`` the metrics and health served there (0: any free port) while the
    context lasts, consumer lag measured every ``lag_interval_s``."""
    parts = [sensors] if sensors is not None else []
    tracing = Tracing.configured(plan)
    if tracing is not None:
        parts.append(tracing)
    server, lag = None, None
    if metrics_port is not None:
        disable_created_metrics()  # no *_created series: dashboards and alerts never read them
        metrics, health = Metrics(plan), Health(agents)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):  # the process's own figures
            collector(registry=metrics.registry)
        server = HealthServer(metrics_port, metrics.registry, health).start()
        lag = asyncio.ensure_future(metrics.watch_lag(bootstrap, config, lag_interval_s))
        parts += [metrics, health]
    try:
        yield None if not parts else parts[0] if len(parts) == 1 else Fanout(parts)
    finally:
        if lag is not None:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
        if server is not None:
            server.stop()
