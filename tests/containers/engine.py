"""Drive a compose project with the container engine this machine has: docker compose where a
Docker engine answers, else podman with podman-compose (tests/containers/setup.sh installs it).
Every failure raises EngineError with the command and the tail of its output."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETUP = HERE / "setup.sh"
LOCAL_PYTHON_IMAGE = "localhost/streamserve-python:3.11"
LOCAL_KAFKA_IMAGE = "localhost/streamserve-kafka:4.1.1"


class EngineError(Exception):
    """A container engine is missing or one of its commands failed."""


def _run(command: Sequence[str], *, timeout: float = 300, env: dict[str, str] | None = None, check: bool = True):
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"`{' '.join(command)}` failed: {exc}") from exc
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise EngineError(f"`{' '.join(command)}` exited {done.returncode}:\n{tail}")
    return done


def _answers(command: Sequence[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    try:
        return subprocess.run(list(command), capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass(frozen=True)
class Project:
    """One compose project (``name``, from ``file``) on one engine (``podman`` or ``docker``)."""

    engine: str
    name: str
    file: Path
    env: dict[str, str]

    @property
    def _compose(self) -> list[str]:
        base = ["podman-compose"] if self.engine == "podman" else ["docker", "compose"]
        return [*base, "-p", self.name, "-f", str(self.file)]

    def compose(self, *args: str, timeout: float = 300) -> str:
        """Run a compose subcommand; its output."""
        return _run([*self._compose, *args], timeout=timeout, env=self.env).stdout

    def engine_cmd(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``podman ARGS`` or ``docker ARGS``."""
        return _run([self.engine, *args], timeout=timeout, env=self.env, check=check)

    def up(self, services: Sequence[str], *, scale: dict[str, int] | None = None) -> None:
        """Start ``services`` detached. With podman, dependencies are not started with them
        (podman 4.3 cannot start a container whose stopped dependency has its own): bring the
        dependencies up first."""
        flags = ["-d", *(["--no-deps"] if self.engine == "podman" else [])]
        for service, count in (scale or {}).items():
            flags += ["--scale", f"{service}={count}"]
        self.compose("up", *flags, *services)

    def containers(self, service: str, *, running: bool = True) -> list[str]:
        """Names of ``service``'s containers, sorted."""
        labels = [f"label=com.docker.compose.project={self.name}", f"label=com.docker.compose.service={service}"]
        args = ["ps", "--format", "{{.Names}}", *(a for label in labels for a in ("--filter", label))]
        if not running:
            args.insert(1, "-a")
        return sorted(line for line in self.engine_cmd(*args).stdout.split() if line)

    def wait_exit(self, container: str, timeout: float) -> int:
        """Wait for ``container`` to stop; its exit code."""
        return int(self.engine_cmd("wait", container, timeout=timeout).stdout.split()[-1])

    def kill(self, container: str) -> None:
        self.engine_cmd("kill", container)

    def logs(self, container: str, lines: int = 40) -> str:
        done = self.engine_cmd("logs", "--tail", str(lines), container, check=False)
        return done.stdout + done.stderr

    def healthy(self, container: str, timeout: float = 120) -> None:
        """Run ``container``'s health check until it passes (podman without systemd never runs
        it on its own; Docker does, so there the reported state is polled)."""
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            if self.engine == "podman":
                done = self.engine_cmd("healthcheck", "run", container, check=False)
                if done.returncode == 0:
                    return
                last = done.stdout + done.stderr
            else:
                last = self.engine_cmd("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
                if last == "healthy":
                    return
            time.sleep(2)
        raise EngineError(f"{container}: health check still failing after {timeout:.0f} s: {last.strip()[-300:]}")

    def remove(self, *, last: Sequence[str] = ("kafka",)) -> None:
        """Remove every container of the project (scaled replicas too), the services in ``last``
        after the others (workers drain and commit while the broker is there), then its volumes
        and network."""
        project = ["--filter", f"label=com.docker.compose.project={self.name}"]
        later = {c for service in last for c in self.containers(service, running=False)}
        first = self.engine_cmd("ps", "-a", "--format", "{{.Names}}", *project).stdout.split()
        for batch in ([c for c in first if c not in later], sorted(later)):
            if batch:
                self.engine_cmd("rm", "-f", "-t", "10", *batch, timeout=180)
        self.compose("down", "-v", timeout=180)
        if left := self.engine_cmd("ps", "-aq", *project).stdout.split():
            raise EngineError(f"project {self.name}: containers left after down: {left}")


def project(name: str, file: Path, env: dict[str, str]) -> Project:
    """A compose project on this machine's engine, with images ready.

    Docker (where one answers) uses the public base images unless STREAMSERVE_PYTHON_IMAGE /
    STREAMSERVE_KAFKA_IMAGE say otherwise; podman uses the local bases, built (or found cached)
    by tests/containers/setup.sh. No engine raises EngineError: the caller fails, it never skips.
    """
    env = dict(env)
    if _answers(["docker", "info"]) and _answers(["docker", "compose", "version"]):
        return Project("docker", name, file, env)
    if not _answers(["podman", "info"]):
        raise EngineError(
            "no container engine: no Docker engine answers and podman does not run; "
            f"install and configure podman with `{SETUP}` (docs/deploy.md)"
        )
    if shutil.which("podman-compose") is None:
        raise EngineError(f"podman runs but podman-compose is not installed: run `{SETUP}`")
    if "STREAMSERVE_PYTHON_IMAGE" not in env or "STREAMSERVE_KAFKA_IMAGE" not in env:
        _run(["bash", str(SETUP), "images"], timeout=1200)  # cached: seconds; from nothing: minutes
        env.setdefault("STREAMSERVE_PYTHON_IMAGE", LOCAL_PYTHON_IMAGE)
        env.setdefault("STREAMSERVE_KAFKA_IMAGE", LOCAL_KAFKA_IMAGE)
    return Project("podman", name, file, env)
