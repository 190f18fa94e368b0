"""CPU and memory of processes and of the whole machine, from /proc (Linux).

- :func:`cpu_seconds` / :func:`memory_mib`: one process (its threads included).
- :class:`CpuSampler`: a background thread that samples the CPU seconds of a changing set of
  processes, so CPU can be charged to a window chosen afterwards (the middle 80% of a drain, where
  a restarted worker's start-up is left out).
- :class:`Conditions`: what else was going on during a run: the 1-minute load average at its start
  and end, how busy the machine's cores were, and how much of that was processes not under test.
"""

from __future__ import annotations

import bisect
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def memory_mib(pid: int) -> dict[str, float]:
    """``{"rss": VmRSS, "peak_rss": VmHWM}`` of ``pid`` in MiB (empty once it has exited)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values["rss" if name == "VmRSS" else "peak_rss"] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a server's worker pool), by /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += children.get(current, [])
    return found


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) clock ticks of every core since boot, from /proc/stat; (0, 0) without it."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields), fields[3] + fields[4]


@dataclass
class CpuSampler:
    """Samples, every ``interval_s`` in a thread, the CPU seconds of the processes ``pids()`` names
    (``{name: pid}``; it is asked again at every sample, so restarted workers are followed)."""

    pids: Callable[[], dict[str, int]]
    interval_s: float = 0.05
    times: list[float] = field(default_factory=list)  # wall clock (time.time) of each sample
    samples: list[dict[tuple[str, int], float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        values = {(name, pid): cpu_seconds(pid) for name, pid in self.pids().items()}
        self.times.append(time.time())
        self.samples.append(values)

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def window(self, start: float, end: float) -> tuple[float, float, dict[str, float]]:
        """The samples bracketing ``start``..``end`` (wall clock): (first time, last time, CPU seconds
        per name spent between them); a process is charged only while it was seen in both samples."""
        first = max(0, bisect.bisect_right(self.times, start) - 1)
        last = min(len(self.times) - 1, bisect.bisect_left(self.times, end))
        before, after = self.samples[first], self.samples[last]
        spent: dict[str, float] = {}
        for key, value in after.items():
            if key in before:
                spent[key[0]] = spent.get(key[0], 0.0) + value - before[key]
        return self.times[first], self.times[last], spent


def per_event_us(spent: dict[str, float], events: int, groups: dict[str, Iterable[str]]) -> dict[str, float]:
    """CPU µs per event of each group of process names in ``spent``; NaN without events."""
    if events <= 0:
        return {group: float("nan") for group in groups}
    return {group: sum(spent.get(name, 0.0) for name in names) / events * 1e6 for group, names in groups.items()}


class Conditions:
    """The machine during a block: 1-minute load average at start and end, the cores' busy share
    (%) and the share (%) taken by processes outside ``ours()`` (other users, other tests).

    ``children``: count this process's finished children as ours too (a measurement run with
    ``subprocess.run``, gone before the block ends). Use as a context manager; :meth:`summary` after.
    """

    def __init__(self, ours: Callable[[], Iterable[int]] = lambda: (), *, children: bool = False) -> None:
        self.ours, self.children = ours, children
        self.load: list[float] = []
        self.busy_pct = float("nan")
        self.others_pct = float("nan")

    def _own(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.ours()}

    def _children_s(self) -> float:
        if not self.children:
            return 0.0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> Conditions:
        self.load = [round(os.getloadavg()[0], 2)]
        self._own_start, self._children_start, self._ticks = self._own(), self._children_s(), machine_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.load.append(round(os.getloadavg()[0], 2))
        total, idle = machine_ticks()
        own_end = self._own()
        spent = total - self._ticks[0]
        if not spent:
            return
        busy_s = (spent - (idle - self._ticks[1])) / TICK
        ours_s = sum(own_end[pid] - start for pid, start in self._own_start.items() if pid in own_end)
        ours_s += self._children_s() - self._children_start
        self.busy_pct = 100 * busy_s / (spent / TICK)
        self.others_pct = max(0.0, 100 * (busy_s - ours_s) / (spent / TICK))

    def summary(self) -> dict[str, Any]:
        return {"load_1m": self.load, "busy_pct": self.busy_pct, "others_pct": self.others_pct}


def describe(conditions: dict[str, Any]) -> str:
    """``"1.2->2.3, others 4%"``: a run's load average (start->end) and the share of other processes."""
    load = conditions.get("load_1m") or []
    text = "->".join(f"{value:.1f}" for value in load) or "-"
    others = conditions.get("others_pct", float("nan"))
    return text if others != others else f"{text}, others {others:.0f}%"


def window_cost(sampler: CpuSampler, stamps_ms: list[int], groups: dict[str, Iterable[str]]) -> dict[str, float]:
    """CPU µs per answer of each group of process names, over the middle 80% of the answers by their
    Kafka timestamps (when each was produced; the window the steady rate is measured on): start-up and
    the last stragglers are left out. NaN with under 10 answers."""
    times = sorted(stamp / 1000 for stamp in stamps_ms)
    if len(times) < 10:
        return {group: float("nan") for group in groups}
    first, last, spent = sampler.window(times[len(times) // 10], times[len(times) * 9 // 10 - 1])
    answers = bisect.bisect_right(times, last) - bisect.bisect_left(times, first)
    return per_event_us(spent, answers, groups)
