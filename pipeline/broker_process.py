"""A broker child process: start, wait until it answers metadata, stop, kill; its data dir
locked while it runs (the embedded brokers of :mod:`pipeline.broker` build on it)."""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import IO, TypeVar

from pipeline.dirlock import DirLock, own_dir
from pipeline.errors import BrokerError
from pipeline.lifecycle import signals_deferred, spawn

logger = logging.getLogger(__name__)
HOST = "127.0.0.1"
_B = TypeVar("_B", bound="BrokerProcess")
_STACK_FRAME = re.compile(r"\s+(at |\.\.\. \d+ more)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int) -> None:
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


class BrokerProcess:
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
            self._port = free_port()
        check_port_free(self._port)
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
