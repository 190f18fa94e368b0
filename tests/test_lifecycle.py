"""The embedded broker's lifecycle: a stop signal at any stage leaves no JVM, port, lock or temp
dir behind; the JVM dies with its parent; one broker owns a data dir at a time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.dirlock import LOCK_FILE, DirLock, locked_temp_dir, own_dir, remove_abandoned_dirs
from pipeline.errors import BrokerError
from pipeline.lifecycle import STOP_SIGNALS, StopRequested, signals_deferred, spawn, stop_signals

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL]


def until(condition: Callable[[], object], timeout: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what() if callable(what) else what}")
        time.sleep(0.05)


def java_processes(marker: Path, *words: str) -> list[int]:
    """Live java processes whose command line names ``marker`` (and every one of ``words``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:  # gone meanwhile
            continue
        line = b" ".join(argv)
        if argv and argv[0].endswith(b"java") and all(w.encode() in line for w in (str(marker), *words)):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a thread of ``pid`` still runs: its files (ports, locks) close with the last one. A
    zombie has died; it only waits for a parent that may never reap it."""
    states = []
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(task.read_text().rsplit(") ", 1)[1][0])
        except OSError:  # exited meanwhile
            continue
    return any(state not in "ZX" for state in states)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:  # as the broker checks it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def lock_is_free(directory: Path) -> bool:
    lock = DirLock(directory)
    free = lock.acquire()
    lock.release()
    return free


def default_signals() -> None:
    """In a child: SIGINT and SIGHUP as a terminal sends them, even if pytest runs in the
    background (SIGINT ignored) or under nohup (SIGHUP ignored), which the broker respects."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


class Broker:
    """``streamserve broker`` in a subprocess whose temp dirs go under ``tmp/tmp``."""

    def __init__(self, tmp: Path, port: int, data_dir: Path | None = None) -> None:
        self.tmp, self.port = tmp, port
        self.out = tmp / f"broker-{time.monotonic_ns()}.out"
        command = [sys.executable, "-m", "pipeline.cli", "broker", "--port", str(port)]
        command += ["--data-dir", str(data_dir)] if data_dir else []
        (tmp / "tmp").mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "PYTHONUNBUFFERED": "1"}
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=default_signals
            )

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 120) -> None:
        def met() -> object:
            if self.proc.poll() is not None:
                raise AssertionError(f"the broker exited with {self.proc.returncode} before {what}:\n{self.output}")
            return condition()

        until(met, timeout, lambda: f"{what}; output:\n{self.output}")

    def ready(self) -> Broker:
        self.wait_for(lambda: "listening on" in self.output, "it was ready")
        return self

    def stop_with(self, signum: int) -> None:
        """Send ``signum``; then nothing may be left: the JVM, the port, the data dir's lock."""
        jvms = java_processes(self.tmp)
        assert jvms, "no JVM to stop"
        self.proc.send_signal(signum)
        code = self.proc.wait(60)
        if signum == signal.SIGKILL:  # the kernel kills the JVM as the parent dies: wait for its exit
            assert code == -signal.SIGKILL
            until(lambda: not any(map(alive, jvms)), 10, "the JVM died with its parent")
        else:  # the parent waited for the JVM to stop
            assert code == 0, self.output
            assert f"{signal.Signals(signum).name}: stopped the kafka broker" in self.output
            assert not any(map(alive, jvms))
        assert java_processes(self.tmp) == [] and port_is_free(self.port)
        assert "Traceback" not in self.output, self.output


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Starts ``streamserve broker`` subprocesses on one port; SIGKILLs any left at the end."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    started: list[Broker] = []

    def start(data_dir: Path | None = None) -> Broker:
        started.append(Broker(tmp_path, port, data_dir))
        return started[-1]

    yield start
    for left in started:
        if left.proc.poll() is None:
            left.proc.kill()
            left.proc.wait()


@pytest.mark.kafka
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_at_any_stage_leaves_nothing_behind(
    signum: int, tmp_path: Path, broker: Callable[..., Broker]
) -> None:
    temp_root, data = tmp_path / "tmp" / f"streamserve-{os.getuid()}", tmp_path / "data"

    starting = broker()  # a temp dir; stopped while its JVM starts
    starting.wait_for(lambda: java_processes(temp_root, "kafka.Kafka"), "the broker JVM started")
    starting.stop_with(signum)
    assert "listening on" not in starting.output
    left = [d for d in temp_root.iterdir() if d.is_dir()]
    if signum == signal.SIGKILL:  # nobody left to remove it: the next start does
        assert len(left) == 1 and lock_is_free(left[0])
    else:
        assert left == []

    formatting = broker(data)  # a new named dir; stopped while it is formatted
    formatting.wait_for(lambda: java_processes(data, "StorageTool"), "the storage was being formatted")
    formatting.stop_with(signum)
    assert lock_is_free(data) and not (data / "kafka-logs" / "meta.properties").exists()

    running = broker(data).ready()  # the dir is usable at once; the temp dir is swept
    assert [d for d in temp_root.iterdir() if d.is_dir()] == []
    second = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "broker", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )
    jvm = java_processes(data, "kafka.Kafka")
    assert second.returncode == 2 and len(jvm) == 1, second.stderr
    holders = f"held by pid {running.proc.pid}, {jvm[0]}"
    assert f"streamserve: data dir {data} is in use by another broker ({holders}" in second.stderr
    running.stop_with(signum)

    crashing = broker(data).ready()  # reusable after a ready broker's stop too; then its JVM crashes
    os.kill(java_processes(data, "kafka.Kafka")[0], signal.SIGKILL)
    assert crashing.proc.wait(60) == 2 and "Traceback" not in crashing.output
    assert "streamserve: the kafka broker exited on its own with code -9" in crashing.output
    assert lock_is_free(data) and port_is_free(crashing.port)


def test_ctrl_c_or_a_stop_anywhere_exits_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(_: object) -> int:
        raise KeyboardInterrupt

    def stopped(_: object) -> int:
        raise StopRequested(signal.SIGTERM)

    def failed(_: object) -> int:
        raise BrokerError("port 1 is in use")

    for handler, code in [(interrupted, 130), (stopped, 128 + signal.SIGTERM), (failed, 2)]:
        monkeypatch.setattr(cli, "cmd_graph", handler)
        assert cli.main(["graph", "any:graph"]) == code
    assert capsys.readouterr().err == "streamserve: port 1 is in use\n"


@pytest.fixture
def handlers() -> Iterator[None]:
    """Python handlers that do nothing, whatever pytest inherited (SIG_IGN in the background)."""
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in STOP_SIGNALS}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_stop_signals_raise_once_then_restore_the_handlers(signum: signal.Signals) -> None:
    before, seen = signal.getsignal(signum), []
    with stop_signals(on_stop=seen.append) as state:
        with pytest.raises(StopRequested) as stop:
            signal.raise_signal(signum)
        signal.raise_signal(signum)  # a second signal does not cut the clean-up short
    assert stop.value.signum == signum and (state.signum, state.count, seen) == (signum, 2, [signum, signum])
    assert signal.getsignal(signum) is before
    with stop_signals(raise_stop=False) as state:
        signal.raise_signal(signum)
        assert state.wait(1) and state.signum == signum


@pytest.mark.usefixtures("handlers")
def test_an_ignored_signal_stays_ignored() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    with stop_signals() as state:
        signal.raise_signal(signal.SIGHUP)
    assert not state.requested and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


@pytest.mark.usefixtures("handlers")
def test_deferred_signals_arrive_when_the_block_ends() -> None:
    done = []
    with pytest.raises(StopRequested), stop_signals():
        with signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            done.append("critical section")
        done.append("not reached")
    assert done == ["critical section"]


PARENT = """
import sys, threading, time
from pipeline.lifecycle import spawn
children = [spawn(["sleep", "60"])]
thread = threading.Thread(target=lambda: children.append(spawn(["sleep", "60"])))
thread.start(); thread.join()  # the forking thread is gone; its child must not die with it
time.sleep(0.5)
print(*(c.pid for c in children if c.poll() is None), flush=True)
time.sleep(60)
"""


def test_children_die_with_their_parent_even_when_a_thread_spawned_them() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert parent.stdout is not None
    children = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(children) == 2, "a child died with the thread that spawned it"
    parent.kill()
    parent.wait()
    until(lambda: not any(map(alive, children)), 5, "the children died with their parent")


def test_a_dir_stays_locked_while_a_child_holds_it_and_is_swept_once_free(tmp_path: Path) -> None:
    held, abandoned = locked_temp_dir("held-", root=tmp_path), locked_temp_dir("abandoned-", root=tmp_path)
    child = spawn(["sleep", "60"], pass_fds=(held.fd,))
    held.release()
    abandoned.release()
    assert remove_abandoned_dirs(tmp_path) == [abandoned.directory]
    assert held.directory.is_dir() and not lock_is_free(held.directory)
    assert sorted(map(int, held.path.read_text().split())) == [os.getpid()]
    child.kill()
    child.wait()
    assert remove_abandoned_dirs(tmp_path) == [held.directory]


def test_a_dir_is_refused_at_once_while_its_owner_lives_and_waits_for_an_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # own_dir sweeps the temp root
    data, owner = tmp_path / "data", own_dir(tmp_path / "data")
    child = spawn(["sleep", "60"], pass_fds=(owner.fd,))  # shares the lock, as the broker JVM does
    owner.record(os.getpid(), child.pid)
    owner.release()
    started = time.monotonic()
    with pytest.raises(BlockingIOError, match=f"held by pid {os.getpid()}, {child.pid}, in {data}"):
        own_dir(data)  # the owner lives: no wait
    assert time.monotonic() - started < 1
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data / LOCK_FILE).write_text(f"{dead.pid} {child.pid}\n")  # the owner died; its child is dying
    threading.Timer(0.5, child.kill).start()
    own_dir(data).release()
    assert 0.4 < time.monotonic() - started < 5
    child.wait()
