"""One run of a system, and the median (min-max) of several: the shape every comparison shares.

A run: the system started afresh and warmed up; a drain (a backlog produced while its entry is
stopped, or open loop where the entry cannot be stopped); then a steady rate. For each: the
summary of :class:`common.Run`, CPU µs per event of the system's processes, the broker and this
driver over the middle 80% of the answers, and for the whole run the machine's conditions (load
average, the share of processes outside the run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from common import Table, Target, answer_id, backlog, num, run_load
from cpu import Conditions, CpuSampler, describe, window_cost
from stats import fmt, ratio_runs, spread

from pipeline.client import Request

FIGURES = {  # figure name -> path in a run's result
    "events_per_s": "drain.steady_events_per_s",
    "overall_events_per_s": "drain.overall_events_per_s",
    "p50_ms": "steady_load.latency_ms.p50",
    "p95_ms": "steady_load.latency_ms.p95",
    "p99_ms": "steady_load.latency_ms.p99",
    "busy_pct": "busy_pct_at_rate",
    **{
        f"cpu_{group}_{when}": f"cpu_us_per_event_{when}.{group}"
        for group in ("system", "broker", "driver")
        for when in ("saturated", "at_rate")
    },
}


def run_system(
    system: Target,
    drain: Sequence[Request],
    paced: Sequence[Request],
    rate: float,
    broker_pid: int | None,
    *,
    warm: Callable[[Target], None],
    pause: bool = True,
    answer_id: Callable[[Any], str] = answer_id,
) -> dict[str, Any]:
    """Start ``system``, ``warm`` it, drain ``drain`` (a backlog when ``pause``, else open loop),
    then send ``paced`` at ``rate``/s; every figure of the run."""

    def pids() -> dict[str, int]:
        extra = {"broker": broker_pid, "driver": os.getpid()}
        return {**system.pids(), **{name: pid for name, pid in extra.items() if pid}}

    with system, Conditions(lambda: pids().values()) as conditions:
        warm(system)
        processes = list(system.pids())
        groups = {"system": processes, "broker": ["broker"], "driver": ["driver"]}
        with CpuSampler(pids) as sampler:
            if pause:
                drained = backlog(system, drain, answer_id=answer_id)
            else:
                drained = run_load(system, drain, answer_id=answer_id)
        saturated = window_cost(sampler, drained.out_ms, groups)
        with CpuSampler(pids) as sampler, Conditions(lambda: pids().values()) as busy:
            steady = run_load(system, paced, rate=rate, answer_id=answer_id)
        at_rate = window_cost(sampler, steady.out_ms, groups)
    return {
        "label": system.label,
        "processes": len(processes),
        "drain": drained.summary(),
        "steady_load": steady.summary(),
        "cpu_us_per_event_saturated": saturated,
        "cpu_us_per_event_at_rate": at_rate,
        "busy_pct_at_rate": busy.busy_pct,
        "conditions": conditions.summary(),
    }


def _at(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for part in path.split("."):
        value = value[part]
    return value


def summarise(runs: list[dict[str, Any]], systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per system: median (min-max) of every figure of :data:`FIGURES` over its runs, and totals."""
    figures: dict[str, dict[str, Any]] = {}
    for system in systems:
        mine = [run for run in runs if run["system"] == system]
        if not mine:
            continue
        figures[system] = {
            "label": mine[0]["label"],
            "processes": mine[0]["processes"],
            **{name: spread(_at(run, path) for run in mine) for name, path in FIGURES.items()},
            **{
                total: sum(run[part][total] for run in mine for part in ("drain", "steady_load"))
                for total in ("sent", "answered", "dead_letters")
            },
        }
    return figures


def ratios(runs: list[dict[str, Any]], ours: str, others: Sequence[str], figure: str = "events_per_s") -> dict:
    """``ours``'s ``figure`` over each of ``others``', round by round, as median (min-max)."""
    path = FIGURES[figure]
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["system"]] = _at(run, path)
    rounds = sorted(by_round)
    mine = [by_round[r].get(ours, float("nan")) for r in rounds]
    return {
        f"{ours}/{other}": spread(ratio_runs(mine, [by_round[r].get(other, float("nan")) for r in rounds]))
        for other in others
        if other != ours
    }


def throughput_table(title: str, figures: dict[str, dict[str, Any]], rate: float) -> Table:
    """events/s, latency at ``rate`` and answers per system, median (min-max)."""
    at = f"at {rate:,.0f}/s"
    table = Table(
        title,
        ["system", "processes", "events/s", "overall events/s", f"p50 ms {at}", f"p99 ms {at}", "answered"],
    )
    for figure in figures.values():
        answered = f"{figure['answered']:,}/{figure['sent']:,}"
        table.add(
            figure["label"],
            figure["processes"],
            fmt(figure["events_per_s"]),
            fmt(figure["overall_events_per_s"]),
            fmt(figure["p50_ms"], 1),
            fmt(figure["p99_ms"], 1),
            answered + (f", {figure['dead_letters']:,} dead letters" if figure["dead_letters"] else ""),
        )
    return table


def cpu_table(figures: dict[str, dict[str, Any]], rate: float, *, open_loop: bool = False) -> Table:
    """CPU µs per event, draining (a backlog, or ``open_loop``) and at ``rate``, per system (medians)."""
    at = f"at {rate:,.0f}/s"
    table = Table(
        "CPU µs per event (median of the runs): the system's processes, the broker, the driver",
        ["system", "draining: system", "broker", "driver", f"{at}: system", "broker", "driver", "CPU busy %"],
    )
    for figure in figures.values():
        table.add(
            figure["label"],
            *(
                num(figure[f"cpu_{group}_{when}"]["median"])
                for when in ("saturated", "at_rate")
                for group in ("system", "broker", "driver")
            ),
            num(figure["busy_pct"]["median"]),
        )
    reader = "the driver produces and reads" if open_loop else "the driver only reads then"
    table.note = (
        f"draining: over the middle 80% of the drain's answers ({reader}); at the rate, the driver produces "
        "and reads; CPU busy: the machine's cores busy during the steady load"
    )
    return table


def runs_table(runs: list[dict[str, Any]], rate: float) -> Table:
    """Every run: its round, its place in the round's order, its main figures and the machine's load."""
    table = Table(
        "every run",
        ["round", "order", "system", "events/s", f"p99 ms at {rate:,.0f}/s", "CPU µs/event", "load 1 min, others"],
    )
    for run in runs:
        table.add(
            run["round"],
            run["position"],
            run["system"],
            num(run["drain"]["steady_events_per_s"]),
            num(run["steady_load"]["latency_ms"]["p99"], 1),
            num(run["cpu_us_per_event_saturated"]["system"]),
            describe(run["conditions"]),
        )
    table.note = (
        "CPU µs/event: the system's processes while draining; load: the 1-minute load average at the run's "
        "start and end; others: the machine's CPU taken by processes outside the run (other users, the kernel)"
    )
    return table
