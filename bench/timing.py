"""Timing a call in-process; no dependencies, so MLRun's own venv (bench/mlrun_mock.py) uses it too."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(call: Callable[[], Any], repeat: int, rounds: int = 5) -> float:
    """The fastest mean µs per call over ``rounds`` rounds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        best = min(best, (time.perf_counter() - start) / repeat * 1e6)
    return best
