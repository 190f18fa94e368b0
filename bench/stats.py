"""Repeated runs: the order systems take in each round, and median (min-max) summaries.

A headline figure is the median of at least :data:`MIN_RUNS` runs with its range; in round ``r``
the systems run in the order rotated by ``r``, so with as many rounds as systems each one goes first
(and last) once, and a machine that warms up or gets busier over the rounds favours none of them.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
MIN_RUNS = 3


def rounds_for(systems: int, asked: int | None, *, quick: bool = False) -> int:
    """Rounds to run: ``asked``, else ``max(MIN_RUNS, systems)``; with --quick, 2 unless asked."""
    if asked:
        return asked
    return 2 if quick else max(MIN_RUNS, systems)


def orders(systems: Sequence[T], rounds: int) -> list[list[T]]:
    """Each round's order: ``systems`` rotated by the round's number (a Latin square when
    ``rounds == len(systems)``)."""
    count = len(systems)
    return [[systems[(start + offset) % count] for offset in range(count)] for start in range(rounds)]


def spread(values: Iterable[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of the finite ``values`` (NaN where there are none)."""
    runs = [float(value) for value in values]
    finite = [value for value in runs if value == value]
    if not finite:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan, "runs": runs}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite), "runs": runs}


def fmt(summary: dict[str, Any] | float | None, digits: int = 0, *, suffix: str = "") -> str:
    """``"6,078 (5,900-6,200)"``; a single run shows alone; ``-`` when nothing was measured."""
    summary = as_spread(summary)
    median, low, high = summary["median"], summary["min"], summary["max"]
    if median != median:
        return "-"

    def one(value: float) -> str:
        return f"{value:,.{digits}f}{suffix}"

    if len(summary["runs"]) < 2 or one(low) == one(high):
        return one(median)
    return f"{one(median)} ({one(low)}-{one(high)})"


def ratio_runs(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios (each pair measured in the same round, minutes apart)."""
    return [a / b if b and b == b and a == a else float("nan") for a, b in zip(numerators, denominators)]


def as_spread(value: Any) -> dict[str, Any]:
    """A spread as it is, a single figure (an older result's) as a spread of one run."""
    if isinstance(value, dict):
        return value
    return spread([value] if isinstance(value, (int, float)) else [])
