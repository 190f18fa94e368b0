"""Directories one process owns at a time: an exclusive lock that a child process can hold on
to, temp dirs that are removed by whoever finds their owner gone."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)
LOCK_FILE = "streamserve.lock"


class DirLock:
    """An exclusive ``flock`` on ``<directory>/streamserve.lock``.

    Children started with ``pass_fds=(lock.fd,)`` share it: the lock is free again only when
    this process *and* those children have exited or released it, however they ended. The file
    holds the pids written with :meth:`record`, for the message of whoever finds it taken.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    @property
    def fd(self) -> int:
        """The locked file's descriptor, to pass to children that should hold the lock too."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not locked by this DirLock")
        return self._fd

    def acquire(self) -> bool:
        """Take the lock without waiting and record this pid; False if another process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.record(os.getpid())
        return True

    def record(self, *pids: int) -> None:
        """Write the pids that hold the lock (this process, then its children) into the file."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, " ".join(str(pid) for pid in pids).encode() + b"\n", 0)

    def holders(self) -> list[int]:
        """The pids the holder recorded (empty when unknown)."""
        try:
            return [int(word) for word in self.path.read_text().split() if word.isdigit()]
        except OSError:
            return []

    def release(self) -> None:
        """Give up this process's share of the lock (children passed the fd keep theirs)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def temp_root() -> Path:
    """This user's folder of streamserve temp dirs, under ``tempfile.gettempdir()``."""
    return Path(tempfile.gettempdir()) / f"streamserve-{os.getuid()}"


def own_dir(directory: str | Path | None, *, prefix: str = "dir-", orphan_grace_s: float = 10.0) -> DirLock:
    """The held lock of ``directory`` (created if missing), or of a new :func:`locked_temp_dir`
    when None; either way after :func:`remove_abandoned_dirs`.

    ``BlockingIOError`` naming the holders' pids at once while the process that took the lock
    lives; once it is dead, its children (dying with it) get ``orphan_grace_s`` to let go.
    ``OSError`` when the directory cannot be created.
    """
    if directory is None:
        return locked_temp_dir(prefix)
    with contextlib.suppress(OSError):
        remove_abandoned_dirs()
    lock = DirLock(directory)
    lock.directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + orphan_grace_s
    while not lock.acquire():
        holders = lock.holders()
        if not holders or _running(holders[0]) or time.monotonic() > deadline:
            raise BlockingIOError(f"held by pid {', '.join(map(str, holders)) or 'unknown'}, in {lock.path}")
        time.sleep(0.1)
    return lock


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def locked_temp_dir(prefix: str, *, root: str | Path | None = None) -> DirLock:
    """Create a directory under ``root`` (default :func:`temp_root`) and return its held lock,
    after :func:`remove_abandoned_dirs`. ``OSError`` when ``root`` cannot be created or is
    another user's."""
    with _exclusive(root) as folder:
        _remove_abandoned(folder)
        lock = DirLock(tempfile.mkdtemp(prefix=prefix, dir=folder))
        if not lock.acquire():  # a fresh dir: nobody else can hold it
            raise BlockingIOError(f"{lock.path} was locked as soon as it was created")
    return lock


def remove_abandoned_dirs(root: str | Path | None = None) -> list[Path]:
    """Remove the directories under ``root`` (default :func:`temp_root`) whose lock nobody holds:
    those of processes that were SIGKILLed, or that kept a temp dir after a failed start."""
    with _exclusive(root) as folder:
        return _remove_abandoned(folder)


@contextlib.contextmanager
def _exclusive(root: str | Path | None) -> Iterator[Path]:
    """``root``, created for this user only, locked: sweeping and creating are one step, so a new
    directory is never swept before it is locked."""
    folder = Path(root) if root is not None else temp_root()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user; set TMPDIR to a folder of yours")
    with open(folder / ".lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield folder


def _remove_abandoned(root: Path) -> list[Path]:
    removed = []
    for directory in sorted(root.iterdir()):
        if not directory.is_dir() or directory.is_symlink():
            continue
        lock = DirLock(directory)
        if lock.path.exists() and not lock.acquire():
            continue  # in use
        try:
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            lock.release()
        logger.info("removed %s: the process that owned it is gone", directory)
        removed.append(directory)
    return removed
