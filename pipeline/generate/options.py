"""The generators' settings, with the defaults the commands show (no heavy imports: the CLI reads
them while it builds its parser)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ComposeOptions", "K8sOptions"]


@dataclass(frozen=True)
class ComposeOptions:
    """How the compose file runs: the steps' ``image`` (built from the Dockerfile unless
    ``build`` is false), their SIGTERM drain time, how long the topics job waits for Kafka,
    the workers' metrics port (None: no ``--metrics-port`` and no step health check) and a
    Kafka client config file to mount (``STREAMSERVE_KAFKA_CONFIG``)."""

    image: str = "streamserve:local"
    build: bool = True
    stop_grace_s: int = 30
    topics_wait_s: int = 180
    metrics_port: int | None = None
    kafka_config: str | None = None  # a host path of a Kafka client properties file, mounted into every service


@dataclass(frozen=True)
class K8sOptions:
    """The cluster side: worker image, Kafka bootstrap servers, KEDA's target lag per replica and
    minimum replicas, each worker's resource requests and memory limit, the workers' metrics
    port (probes, Prometheus scraping and ``--metrics-port``), their SIGTERM drain time, and the
    Secret with the Kafka client config of a secured cluster."""

    image: str = "streamserve:local"
    bootstrap: str = "kafka:9092"
    lag_threshold: int = 100
    min_replicas: int = 1
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"
    metrics_port: int = 9400
    stop_grace_s: int = 30
    kafka_config_secret: str | None = None  # a Secret holding client.properties (and the files it names)
