"""Process lifecycle: children that die with their parent, and stop signals turned into a
clean stop of a foreground command (directories one process owns: :mod:`pipeline.dirlock`).

POSIX only (``fcntl``). The parent-death signal is Linux's; elsewhere a child outlives a
parent killed with SIGKILL, and the directory lock it holds then names it to whoever comes next.

A foreground command that runs children (``streamserve broker``, a worker supervisor)::

    with stop_signals() as stop:          # SIGTERM, SIGHUP, SIGINT raise StopRequested, once
        with signals_deferred():          # a signal here waits: the child is never lost
            child = spawn(command)        # killed by the kernel if this process dies
        try:
            child.wait()
        finally:
            with signals_deferred():
                child.terminate()
                child.wait()

A polling loop can take the signal as a flag instead: ``stop_signals(raise_stop=False,
on_stop=forward)`` calls ``forward(signum)`` on each signal and ``stop.wait(0.5)`` /
``stop.requested`` tell the loop. Catch :class:`StopRequested` outside the ``with``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from types import FrameType
from typing import Any, TypeVar

__all__ = [
    "STOP_SIGNALS",
    "StopRequested",
    "StopSignals",
    "parent_death_signal",
    "run_tied",
    "signals_deferred",
    "spawn",
    "stop_signals",
]

logger = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_PR_SET_PDEATHSIG = 1
_T = TypeVar("_T")


# --- children that die with their parent -------------------------------------------------------


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def parent_death_signal(signum: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when its parent dies, SIGKILL included.

    Linux only: elsewhere None (no hook; ``Popen(preexec_fn=None)`` is the plain spawn). The
    kernel sends the signal when the *thread* that forked the child exits, not only the process:
    fork from the main thread or a thread that outlives the child (:func:`spawn` does). A child
    whose parent died before the hook ran exits at once instead.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def tie_to_parent() -> None:  # runs in the child, between fork and exec
        if prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return tie_to_parent


class _Spawner:
    """One daemon thread that forks for short-lived threads, so the parent-death signal of their
    children fires only when this process exits."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="streamserve-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call, future = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:
                    future.set_exception(exc)

    def call(self, call: Callable[[], _T]) -> _T:
        future: Future[_T] = Future()
        self._calls.put((call, future))
        return future.result()


_spawner_lock = threading.Lock()
_spawner: _Spawner | None = None


def _forget_spawner() -> None:  # a forked child has no threads but the forking one
    global _spawner
    _spawner = None


os.register_at_fork(after_in_child=_forget_spawner)


def spawn(args: Sequence[str], *, death_signal: int = signal.SIGKILL, **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **popen)`` for a child that gets ``death_signal`` when this
    process dies (see :func:`parent_death_signal`), from whichever thread calls it.

    From the main thread, wrap the call *and* the line that keeps the ``Popen`` in
    :func:`signals_deferred`, so a stop signal cannot lose a started child.
    """
    global _spawner
    tie = parent_death_signal(death_signal)

    def start() -> subprocess.Popen[Any]:
        return subprocess.Popen(args, preexec_fn=tie, **popen)

    if tie is None or threading.current_thread() is threading.main_thread():
        return start()
    with _spawner_lock:
        _spawner = _spawner or _Spawner()
    return _spawner.call(start)


def run_tied(args: Sequence[str], *, timeout: float, **popen: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` for a child made by :func:`spawn`: it never outlives the call, which a
    stop signal, ``subprocess.TimeoutExpired`` or the death of this process ends early."""
    with signals_deferred():
        child = spawn(args, **popen)
    try:
        out, err = child.communicate(timeout=timeout)
    except BaseException:
        with signals_deferred():
            child.kill()
            child.wait()
        raise
    return subprocess.CompletedProcess(args, child.returncode, out, err)


# --- stop signals ------------------------------------------------------------------------------


class StopRequested(BaseException):
    """A stop signal arrived; raised in the main thread inside :func:`stop_signals`.

    A ``BaseException``, as ``KeyboardInterrupt``: ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


class StopSignals:
    """What :func:`stop_signals` yields: whether and by which signal a stop was asked."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._event.is_set()

    def _arrived(self, signum: int) -> bool:
        self.count += 1
        if self.signum is not None:
            return False
        self.signum = signum
        self._event.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop signal arrives or ``timeout`` passes; whether one arrived."""
        return self._event.wait(timeout)


@contextlib.contextmanager
def stop_signals(
    signals: Sequence[int] = STOP_SIGNALS,
    *,
    raise_stop: bool = True,
    on_stop: Callable[[int], None] | None = None,
) -> Iterator[StopSignals]:
    """Within the block, SIGTERM, SIGHUP and SIGINT (or ``signals``; not those ignored, as
    under ``nohup``) ask for a clean stop.

    Each arrival calls ``on_stop(signum)`` and is counted; the first also sets the yielded
    :class:`StopSignals`, and with ``raise_stop`` raises :class:`StopRequested` in the main thread
    (once: later signals do not interrupt the clean-up). The previous handlers come back when
    the block ends. Main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("stop_signals() installs signal handlers: enter it in the main thread")
    stop = StopSignals()

    def handle(signum: int, _frame: FrameType | None) -> None:
        first = stop._arrived(signum)
        if on_stop is not None:
            on_stop(signum)
        if first and raise_stop:
            raise StopRequested(signum)

    with _handlers(signals, handle):
        yield stop


@contextlib.contextmanager
def signals_deferred(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Hold ``signals`` back for the block and deliver them, once each, to the handlers in force
    when it ends: a critical section (spawn a child and keep its handle, stop it) that a signal
    must not cut in half. Does nothing outside the main thread, where no handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    try:
        with _handlers(signals, lambda signum, _frame: pending.append(signum)):
            yield
    finally:
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


@contextlib.contextmanager
def _handlers(signals: Sequence[int], handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    previous: dict[int, Any] = {}
    try:
        for signum in signals:
            # Left alone: a signal ignored on purpose (nohup, a background job) or handled outside Python.
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
