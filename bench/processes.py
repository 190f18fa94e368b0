"""The processes a benchmark target runs: one per (name, instance), each logging to its own file.

The benchmarks' own, so they depend on nothing of streamserve's process supervision (which
restarts crashed workers: a benchmark wants to see a crash, not a restart) and run any command
line: streamserve workers, hand-written hops, MLServer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STOP_TIMEOUT_S = 20.0


class Processes:
    """Child processes by ``(name, instance)``: started from ``command(name, instance)`` with ``env``
    added to this process's environment, in ``cwd``, output to ``log_dir/<name>.<instance>.log``;
    stopped with SIGTERM (SIGKILL after a timeout)."""

    def __init__(
        self,
        command: Callable[[str, int], list[str]],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command, self.log_dir, self.cwd = command, log_dir, cwd
        self.env = {**os.environ, **(env or {})}
        self.processes: dict[tuple[str, int], subprocess.Popen[Any]] = {}

    def start(self, name: str, instance: int = 0) -> subprocess.Popen[Any]:
        """Start ``instance`` of ``name``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.{instance}.log", "ab") as log:
            process = subprocess.Popen(
                self.command(name, instance), stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )
        self.processes[name, instance] = process
        return process

    def terminate(self, name: str, instance: int = 0, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM one process, wait for its exit (SIGKILL after ``timeout``) and forget it; its exit code."""
        return self._terminate([(name, instance)], timeout)[name, instance]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict[tuple[str, int], int]:
        """SIGTERM every process and wait for their exits (SIGKILL after ``timeout``); exit codes."""
        return self._terminate(list(self.processes), timeout)

    def _terminate(self, keys: list[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int]:
        processes = {key: self.processes.pop(key) for key in keys}
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes, deadline = {}, time.monotonic() + timeout
        for key, process in processes.items():
            try:
                codes[key] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[key] = process.wait()
        return codes
