"""One supervisor for worker processes (``run --workers``, ``graph.deploy()``, the demo, tests):
start, scale, restart after a crash with backoff, stop; every worker dies with its parent."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.lifecycle import signals_deferred, spawn, stop_signals
from pipeline.plan import Plan

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a worker that ran this long starts its next backoff from 1 s
STOP_TIMEOUT_S = 20.0


@dataclass
class Worker:
    """One worker process: the agents it runs (empty: all of the graph), its instance number."""

    agents: tuple[str, ...]
    instance: int
    process: subprocess.Popen[Any]
    started: float
    options: tuple[str, ...] = ()
    backoff: float = 1.0
    restart_at: float | None = None  # when a crashed worker is started again


class Supervisor:
    """Worker processes of one graph (``reference``, as ``streamserve run`` loads it; ``plan``,
    optional, is its plan) against the Kafka cluster at ``bootstrap``, each
    ``streamserve run ... --step ... --instance N``.

    A worker that exits on its own with an error is started again after a backoff (1 s
    doubling to 30 s); one stopped through the supervisor, or that exits 0, is not. Workers get
    a parent-death signal (SIGTERM: they commit and leave their group), so none outlives a
    supervisor that is killed. ``options`` are added to every worker's command line.
    """

    def __init__(
        self,
        reference: str,
        bootstrap: str,
        *,
        plan: Plan | None = None,
        log_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.reference, self.bootstrap, self.options, self.plan = reference, bootstrap, list(options), plan
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = {**os.environ, **(env or {})}
        self.workers: dict[tuple[tuple[str, ...], int], Worker] = {}
        self._lock = threading.RLock()

    @property
    def processes(self) -> dict[tuple[str, int], subprocess.Popen[Any]]:
        """The live worker processes by (agents joined by ',', instance)."""
        with self._lock:
            return {(",".join(agents), instance): w.process for (agents, instance), w in self.workers.items()}

    def start(
        self, agents: str | Sequence[str] = (), instance: int = 0, options: Sequence[str] = ()
    ) -> subprocess.Popen[Any]:
        """Start worker ``instance`` of ``agents`` (a name, several, or none: every agent), with
        ``options`` added to its command line."""
        names = (agents,) if isinstance(agents, str) else tuple(agents)
        with self._lock:
            process = self._spawn(names, instance, tuple(options))
            self.workers[names, instance] = Worker(names, instance, process, time.monotonic(), tuple(options))
            return process

    def start_all(self, names: Sequence[str] | None = None) -> Supervisor:
        """Start one worker for each of the agents ``names`` (default: every agent of ``plan``)."""
        if names is None:
            if self.plan is None:
                raise ValueError("name the agents to start, or give the supervisor the graph's plan")
            names = [agent.name for agent in self.plan.agents]
        for name in names:
            self.start(name)
        return self

    def scale(self, agents: str | Sequence[str], count: int) -> None:
        """Run ``count`` workers of ``agents``: start the missing ones, stop the highest instances."""
        names = (agents,) if isinstance(agents, str) else tuple(agents)
        with self._lock:
            running = sorted(instance for (group, instance) in self.workers if group == names)
        for instance in range(count):
            if instance not in running:
                self.start(names, instance)
        extra = [(names, instance) for instance in running if instance >= count]
        self._terminate(extra, STOP_TIMEOUT_S)

    def kill(self, agents: str | Sequence[str], instance: int = 0) -> None:
        """SIGKILL one worker (a crash, for fault tests); it is not started again."""
        names = (agents,) if isinstance(agents, str) else tuple(agents)
        with self._lock:
            worker = self.workers.pop((names, instance))
        worker.process.kill()
        worker.process.wait()

    def terminate(self, agents: str | Sequence[str], instance: int = 0, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM one worker (a scale-down) and wait for its clean exit (SIGKILL after ``timeout``)."""
        names = (agents,) if isinstance(agents, str) else tuple(agents)
        return self._terminate([(names, instance)], timeout)[names, instance]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict[tuple[tuple[str, ...], int], int]:
        """SIGTERM every worker and wait for their clean exits (SIGKILL after ``timeout``)."""
        with self._lock:
            keys = list(self.workers)
        return self._terminate(keys, timeout)

    def check(self) -> None:
        """Start again, after their backoff, the workers that exited on their own with an error."""
        now = time.monotonic()
        with self._lock:
            for key, worker in list(self.workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                if code == 0:  # stopped from outside, cleanly: done
                    del self.workers[key]
                    continue
                if worker.restart_at is None:
                    if now - worker.started > HEALTHY_AFTER_S:
                        worker.backoff = 1.0
                    worker.restart_at = now + worker.backoff
                    logger.error(
                        "worker %s of %s exited with %d; starting it again in %.0f s",
                        worker.instance,
                        ",".join(worker.agents) or "every agent",
                        code,
                        worker.backoff,
                    )
                elif now >= worker.restart_at:
                    worker.process, worker.started = self._spawn(worker.agents, worker.instance, worker.options), now
                    worker.backoff, worker.restart_at = min(worker.backoff * 2, MAX_BACKOFF_S), None

    def watch(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """:meth:`check` every ``interval_s`` until ``stop`` is set."""
        while not stop.wait(interval_s):
            self.check()

    def alive(self) -> bool:
        """Whether any worker is running or due to be started again."""
        with self._lock:
            return any(w.process.poll() is None or w.restart_at is not None for w in self.workers.values())

    def _spawn(self, agents: tuple[str, ...], instance: int, options: tuple[str, ...]) -> subprocess.Popen[Any]:
        command = [sys.executable, "-m", "pipeline.cli", "run", self.reference, "--bootstrap", self.bootstrap]
        for name in agents:
            command += ["--step", name]
        command += ["--instance", str(instance), *self.options, *options]
        output: Any = None  # without a log folder, workers write where this process does
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            label = ",".join(agents) or "all"
            output = open(self.log_dir / f"{label}.{instance}.log", "ab")
        process = spawn(command, death_signal=signal.SIGTERM, stdout=output, stderr=subprocess.STDOUT, env=self.env)
        if output is not None:
            output.close()  # the child has its own descriptor
        return process

    def _terminate(self, keys: list[tuple[tuple[str, ...], int]], timeout: float) -> dict:
        with self._lock:
            workers = {key: self.workers.pop(key) for key in keys if key in self.workers}
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline, codes = time.monotonic() + timeout, {}
        for key, worker in workers.items():
            try:
                codes[key] = worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes[key] = worker.process.wait()
        return codes

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_foreground(
    reference: str, bootstrap: str, agents: Sequence[str] | None, workers: int, options: Sequence[str] = ()
) -> int:
    """``streamserve run --workers N``: N workers of ``agents`` (default: all) until SIGTERM,
    SIGINT or SIGHUP, which stop them cleanly; the highest worker exit code."""
    supervisor = Supervisor(reference, bootstrap, options=options)
    with stop_signals(raise_stop=False) as stop:
        with signals_deferred():
            for instance in range(workers):
                supervisor.start(tuple(agents or ()), instance)
        while not stop.wait(0.5) and supervisor.alive():
            supervisor.check()
    with signals_deferred():
        codes = supervisor.stop()
    return max(codes.values(), default=0)
