"""A graph deployed as worker processes against a broker (the demo, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.plan import Plan


class Workers:
    """One child process per (agent, instance); stopped with SIGTERM, killable one by one."""

    def __init__(
        self,
        reference: str,
        plan: Plan,
        bootstrap: str,
        *,
        log_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.reference, self.plan, self.bootstrap = reference, plan, bootstrap
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = {**os.environ, **(env or {})}
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}

    def start(self, name: str, instance: int = 0) -> subprocess.Popen:
        """Start worker ``instance`` of agent ``name``."""
        command = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            self.reference,
            "--step",
            name,
            "--bootstrap",
            self.bootstrap,
            "--instance",
            str(instance),
        ]
        output = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{name}.{instance}.log", "ab")
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=self.env)
        self.processes[name, instance] = process
        return process

    def start_all(self, names: Sequence[str] | None = None) -> Workers:
        """Start one worker for each named agent (default: every agent of the plan)."""
        for name in names or [agent.name for agent in self.plan.agents]:
            self.start(name)
        return self

    def kill(self, name: str, instance: int = 0) -> None:
        """SIGKILL one worker (a crash, for fault tests)."""
        process = self.processes.pop((name, instance))
        process.kill()
        process.wait()

    def stop(self, timeout: float = 20) -> dict[tuple[str, int], int]:
        """SIGTERM every worker, wait for a clean exit (SIGKILL after ``timeout``); exit codes."""
        return self._terminate(list(self.processes), timeout)

    def terminate(self, name: str, instance: int = 0, timeout: float = 20) -> int:
        """SIGTERM one worker (a scale-down) and wait for its clean exit (SIGKILL after ``timeout``)."""
        return self._terminate([(name, instance)], timeout)[name, instance]

    def _terminate(self, keys: list[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int]:
        processes = {key: self.processes.pop(key) for key in keys}
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline, codes = time.monotonic() + timeout, {}
        for key, process in processes.items():
            try:
                codes[key] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[key] = process.wait()
        return codes

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
