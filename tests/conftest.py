"""Shared test set-up: a per-run model folder and the session's Kafka broker."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Train the example models into a per-run folder, never the user's cache."""
    os.environ.setdefault("STREAMSERVE_MODEL_DIR", tempfile.mkdtemp(prefix="streamserve-models-"))


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    return False


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap servers of a real Kafka: $KAFKA_BOOTSTRAP_SERVERS, else testcontainers
    where a Docker engine answers, else the embedded Apache Kafka. Never skips: a broker
    that cannot start fails the run."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1") as container:
            yield container.get_bootstrap_server()
        return
    from pipeline.broker import EmbeddedKafka

    with EmbeddedKafka() as broker:
        yield broker.bootstrap
