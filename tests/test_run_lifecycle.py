"""`streamserve run` dies cleanly with every stop signal: with its workers (`--workers 2`) and
while its embedded broker starts; a SIGKILLed parent leaves no worker and no JVM behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_lifecycle import ROOT, SIGNALS, alive, default_signals, java_processes, lock_is_free, until

from pipeline.dirlock import remove_abandoned_dirs

HELPERS = Path(__file__).parent / "helpers.py"
STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_survivors():
    """Whatever a test leaves running (it failed half way) is killed: its children follow."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def run(tmp: Path, *arguments: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / f"run-{time.monotonic_ns()}.out"
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(tmp / "tmp"),
        "PYTHONUNBUFFERED": "1",
        "STREAMSERVE_TEST_RUN": str(time.time_ns()),
    }
    command = [sys.executable, "-m", "pipeline.cli", "run", f"{HELPERS}:fault_graph", *arguments]
    with open(out, "wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=default_signals
        )
    STARTED.append(process)
    return process, out


@pytest.mark.kafka
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_run_with_workers_stops_them_all_on_every_signal(kafka, tmp_path, signum):
    process, out = run(tmp_path, "--step", "double", "--workers", "2", "--bootstrap", kafka)
    until(lambda: len(children(process.pid)) == 2, 60, "two workers started")
    workers = children(process.pid)
    until(lambda: out.read_text().count("consuming") >= 2, 90, lambda: f"both consume:\n{out.read_text()}")
    process.send_signal(signum)
    code = process.wait(60)
    until(lambda: not any(map(alive, workers)), 30, "the workers stopped with their parent")
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 0, out.read_text()
        assert "Traceback" not in out.read_text(), out.read_text()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_while_the_embedded_broker_starts_leaves_nothing(tmp_path, signum):
    process, out = run(tmp_path)
    until(lambda: java_processes(tmp_path / "tmp"), 60, "the broker's JVM started")
    jvms = java_processes(tmp_path / "tmp")
    process.send_signal(signum)
    code = process.wait(60)
    until(lambda: not any(map(alive, jvms)), 20, "the JVM stopped with its parent")
    assert "Traceback" not in out.read_text(), out.read_text()
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
        left = [d for d in (tmp_path / "tmp").rglob("*kafka*") if d.is_dir()]
        assert all(lock_is_free(d) for d in left)  # nobody holds it: the next start removes it
        remove_abandoned_dirs(tmp_path / "tmp" / f"streamserve-{os.getuid()}")
    else:
        assert code == 128 + signum, out.read_text()
    assert not [d for d in (tmp_path / "tmp").rglob("*") if d.is_dir() and "kafka" in d.name]


def demo(tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / f"demo-{time.monotonic_ns()}.out"
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "PYTHONUNBUFFERED": "1"}
    with open(out, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "demo", "--requests", "100000", "--rate", "200"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=default_signals,
        )
    STARTED.append(process)
    return process, out


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_the_demo_stops_its_broker_and_workers_on_every_signal(tmp_path, signum):
    process, out = demo(tmp_path)
    until(lambda: "sending 100000 requests" in out.read_text(), 180, lambda: f"the demo sends:\n{out.read_text()}")
    workers, jvms = children(process.pid), java_processes(tmp_path / "tmp")
    assert len(workers) >= 7 and jvms
    process.send_signal(signum)
    code = process.wait(90)
    until(lambda: not any(map(alive, workers + jvms)), 30, "the workers and the JVM stopped with the demo")
    assert "Traceback" not in out.read_text(), out.read_text()
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + signum, out.read_text()
        assert not [
            d for d in (tmp_path / "tmp").rglob("*") if d.is_dir() and "streamserve-" in d.name and "kafka" in d.name
        ]
