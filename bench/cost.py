"""What a request costs the whole deployment: CPU of every iris worker, the broker and the load
generator, per request, at a steady rate and at saturation; memory and idle CPU of each process.

All seven agents of the iris graph run as worker processes; requests are the demo's (1-3 rows,
spread over lr, rf and vote). CPU time (utime + stime) comes from /proc/<pid>/stat before and after
each load, memory from /proc/<pid>/status. The broker and this driver (producer + reader: the load
generator) are counted, so "whole deployment" is everything the machine spends on a request.
Loads: idle (nothing sent), --rate requests/s, and saturation (N requests open loop, as fast as one
producer sends: the deployment runs flat out).

Each round deploys the graph afresh: this checkout, and with --compare-tree PATH another one (e.g.
the commit before a runtime change) in an order rotated per round; figures are the median (min-max)
of the rounds. The goal compares the whole deployment's CPU per request at --rate with the
baseline: the other checkout measured in the same run, else the 2026-11-25 report's figure.

Run: python bench/cost.py [--requests 20000] [--rate 1000] [--idle-seconds 5] [--rounds N]
                          [--compare-tree PATH] [--quick]
Prints tables and writes bench/results/cost.json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from common import ROOT, Deployment, Table, checkout, iris_requests, kafka, num, parser, run_load, save, warm_up
from cpu import Conditions, cpu_seconds, describe, memory_mib
from stats import fmt, orders, ratio_runs, rounds_for, spread

# bench/RESULTS.md of 2026-11-25 (commit 9dc1bc9, before the runtime rewrite), iris graph at 1,000/s:
# workers 9.59 + broker 8.74 + driver 1.90 CPU s per 10,000 requests.
REPORTED_MS_PER_REQUEST = (9.59 + 8.74 + 1.90) / 10
GROUPS = ("workers", "broker", "driver", "whole deployment")


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def one_run(deployment: Deployment, broker_pid: int | None, loads: list[tuple[str, float | None]], args: Any) -> dict:
    """Idle CPU, then CPU ms per request of every process under each load, and memory at the end."""
    with deployment:
        warm_up(deployment, iris_requests(30, seed=1))
        pids = {**deployment.pids(), "broker": broker_pid or 0, "driver": os.getpid()}
        pids = {name: pid for name, pid in pids.items() if pid}
        with Conditions(lambda: pids.values()) as conditions:
            idle = idle_percent(pids, args.idle_s)
            per_load: dict[str, dict[str, float]] = {}
            above_idle: dict[str, dict[str, float]] = {}
            answered: dict[str, int] = {}
            for label, rate in loads:
                print(f"  {label}: {args.count:,} requests ...", flush=True)
                before, started = snapshot(pids), time.monotonic()
                run = run_load(deployment, iris_requests(args.count, seed=len(per_load) + 2), rate=rate)
                after, wall = snapshot(pids), time.monotonic() - started
                answered[label] = run.answered
                per_request = 1000 / max(run.answered, 1)  # CPU ms per request
                spent = {name: after[name] - before[name] for name in pids}
                per_load[label] = {name: spent[name] * per_request for name in pids}
                above_idle[label] = {name: (spent[name] - idle[name] / 100 * wall) * per_request for name in pids}
            memory = {name: memory_mib(pid) for name, pid in pids.items()}
    workers = [name for name in pids if name not in ("broker", "driver")]
    members = {"workers": workers, "broker": ["broker"], "driver": ["driver"], "whole deployment": list(pids)}
    return {
        "label": deployment.label,
        "workers": workers,
        "idle_cpu_percent": idle,
        "cpu_ms_per_request": per_load,
        "cpu_ms_per_request_above_idle": above_idle,
        "totals": {
            label: {group: sum(per_load[label][n] for n in names) for group, names in members.items()}
            for label, _ in loads
        },
        "answered": answered,
        "memory_mib": memory,
        "conditions": conditions.summary(),
    }


def idle_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU % over ``seconds`` with nothing sent."""
    before = snapshot(pids)
    time.sleep(seconds)
    after = snapshot(pids)
    return {name: (after[name] - before[name]) / seconds * 100 for name in pids}


def whole_table(runs: list[dict], systems: list[str], loads: list[str], rounds: int) -> tuple[Table, dict]:
    """Workers, broker, driver and the whole deployment, CPU ms per request, median (min-max)."""
    table = Table(
        f"iris graph (7 workers, lr/rf/vote mix): CPU ms per request, median (min-max) of {rounds} rounds",
        ["checkout", "load", *GROUPS],
    )
    figures: dict[str, dict] = {}
    for system in systems:
        mine = [run for run in runs if run["system"] == system]
        for load in loads:
            spreads = {group: spread(run["totals"][load][group] for run in mine) for group in GROUPS}
            figures.setdefault(system, {"label": mine[0]["label"], "checkout": mine[0]["checkout"]})[load] = spreads
            table.add(f"{system}: {mine[0]['checkout']}", load, *(fmt(spreads[group], 2) for group in GROUPS))
    return table, figures


def process_table(runs: list[dict], system: str, loads: list[str]) -> Table:
    """Per process of ``system``: idle CPU, CPU ms per request (and above idle) per load, memory; medians."""
    mine = [run for run in runs if run["system"] == system]
    per_label = [[f"CPU ms/request ({load})", "above idle"] for load in loads]
    headers = ["process", "idle CPU %", *(h for pair in per_label for h in pair), "RSS MiB", "peak RSS MiB"]
    table = Table(f"per process ({system}), medians of the rounds", headers)
    workers = mine[0]["workers"]
    for name in [*workers, "all workers", "broker", "driver"]:
        names = workers if name == "all workers" else [name]

        def median(pick: Any, names: list[str] = names) -> float:
            return spread(sum(pick(run).get(n, 0.0) for n in names) for run in mine)["median"]

        table.add(
            name,
            num(median(lambda run: run["idle_cpu_percent"]), 1),
            *(
                num(median(lambda run, load=load, key=key: run[key][load]), 3)
                for load in loads
                for key in ("cpu_ms_per_request", "cpu_ms_per_request_above_idle")
            ),
            num(median(lambda run: {n: m.get("rss", 0.0) for n, m in run["memory_mib"].items()})),
            num(median(lambda run: {n: m.get("peak_rss", 0.0) for n, m in run["memory_mib"].items()})),
        )
    table.note = "above idle: less the process's idle CPU rate over the load's wall time"
    return table


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="requests per load (default 20,000; 3,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--idle-seconds", type=float, help="idle measurement (default 5; 2 with --quick)")
    cli.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    cli.add_argument("--compare-tree", type=Path, help="another streamserve checkout, measured as 'before'")
    args = cli.parse_args()
    args.count = args.requests or (3_000 if args.quick else 20_000)
    args.idle_s = args.idle_seconds or (2 if args.quick else 5)
    rate_label = f"{args.rate:,.0f}/s"
    loads = [(rate_label, args.rate), ("saturation", None)]
    trees = {"after": None, **({"before": args.compare_tree.resolve()} if args.compare_tree else {})}
    rounds = rounds_for(len(trees), args.rounds, quick=args.quick)
    runs: list[dict] = []
    with kafka(args.bootstrap) as broker:
        for number, order in enumerate(orders(list(trees), rounds), start=1):
            for position, system in enumerate(order, start=1):
                deployment = Deployment(broker.bootstrap, "iris_graph", tree=trees[system])
                print(f"round {number}/{rounds}, {system}: {deployment.label}", flush=True)
                result = one_run(deployment, broker.pid, loads, args)
                where = checkout(trees[system] or ROOT)
                runs.append({"round": number, "position": position, "system": system, "checkout": where, **result})
    systems = list(trees)
    whole, figures = whole_table(runs, systems, [label for label, _ in loads], rounds)
    ours = [run["totals"][rate_label]["whole deployment"] for run in runs if run["system"] == "after"]
    if "before" in trees:
        theirs = [run["totals"][rate_label]["whole deployment"] for run in runs if run["system"] == "before"]
        baseline = {
            "source": f"before: {checkout(trees['before'])}, same run",
            "ratio": spread(ratio_runs(ours, theirs)),
        }
    else:
        ratio = [value / REPORTED_MS_PER_REQUEST for value in ours]
        baseline = {"source": "the 2026-11-25 report (commit 9dc1bc9)", "ratio": spread(ratio)}
    baseline["reported_ms_per_request"] = REPORTED_MS_PER_REQUEST
    whole.note = (
        f"whole deployment: workers + broker + driver (the load generator: producer and reader); saturation: "
        f"{args.count:,} requests open loop. At {rate_label}, after / baseline ({baseline['source']}): "
        f"{fmt(baseline['ratio'], 2)}; the 2026-11-25 report measured {REPORTED_MS_PER_REQUEST:.2f} ms"
    )
    detail = Table("every run", ["round", "order", "checkout", *(f"whole ms/request ({load})" for load, _ in loads)])
    for run in runs:
        detail.add(
            run["round"],
            run["position"],
            run["system"],
            *(num(run["totals"][load]["whole deployment"], 2) for load, _ in loads),
        )
        detail.rows[-1].append(describe(run["conditions"]))
    detail.headers.append("load 1 min, others")
    tables = [whole, *(process_table(runs, system, [label for label, _ in loads]) for system in systems), detail]
    for table in tables:
        table.print()
    save(
        "cost",
        args,
        tables,
        requests=args.count,
        rate=args.rate,
        idle_seconds=args.idle_s,
        rounds=rounds,
        systems=figures,
        baseline=baseline,
        runs=runs,
    )


if __name__ == "__main__":
    main()
