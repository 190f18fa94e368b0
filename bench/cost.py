"""What each worker of the deployed iris graph costs: CPU seconds per 10,000 requests, RSS, idle CPU.

All seven agents run as Workers; requests are the demo's (1-3 rows, spread over lr, rf and vote).
CPU time (utime + stime) comes from /proc/<pid>/stat before and after each load, memory from
/proc/<pid>/status (VmRSS now, VmHWM the peak since the worker started). The broker and this driver
(producer + reader) are measured too. Loads: idle (nothing sent), a steady rate, and open loop.

Run: python bench/cost.py [--requests 20000] [--rate 1000] [--idle-seconds 5] [--quick]
Prints a table and writes bench/results/cost.json.
"""

from __future__ import annotations

import os
import time

from common import Deployment, Table, iris_requests, kafka, num, parser, run_load, save, warm_up

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def memory_mib(pid: int) -> dict[str, float]:
    """``{"rss": VmRSS, "peak_rss": VmHWM}`` of ``pid`` in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values["rss" if name == "VmRSS" else "peak_rss"] = int(rest.split()[0]) / 1024
    return values


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="requests per load (default 20,000; 3,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--idle-seconds", type=float, help="idle measurement (default 5; 2 with --quick)")
    args = cli.parse_args()
    count = args.requests or (3_000 if args.quick else 20_000)
    idle_s = args.idle_seconds or (2 if args.quick else 5)
    loads = [(f"{args.rate:,.0f}/s", args.rate), ("open loop", None)]

    per_load: dict[str, dict[str, float]] = {}
    above_idle: dict[str, dict[str, float]] = {}
    answered: dict[str, int] = {}
    with kafka(args.bootstrap) as broker, Deployment(broker.bootstrap, "iris_graph") as deployment:
        print(f"{deployment.label}: warming up ...", flush=True)
        warm_up(deployment, iris_requests(30, seed=1))
        pids = {**deployment.pids(), "broker": broker.pid or 0, "driver": os.getpid()}
        pids = {name: pid for name, pid in pids.items() if pid}
        before = snapshot(pids)
        time.sleep(idle_s)
        after = snapshot(pids)
        idle = {name: (after[name] - before[name]) / idle_s * 100 for name in pids}
        for label, rate in loads:
            print(f"{label}: {count:,} requests ...", flush=True)
            before, started = snapshot(pids), time.monotonic()
            run = run_load(deployment, iris_requests(count, seed=len(per_load) + 2), rate=rate)
            after, wall = snapshot(pids), time.monotonic() - started
            answered[label] = run.answered
            per_10k = 10_000 / max(run.answered, 1)
            per_load[label] = {name: (after[name] - before[name]) * per_10k for name in pids}
            above_idle[label] = {
                name: (after[name] - before[name] - idle[name] / 100 * wall) * per_10k for name in pids
            }
        memory = {name: memory_mib(pid) for name, pid in pids.items()}

    per_label = [[f"CPU s/10k ({label})", "above idle"] for label, _ in loads]
    headers = ["process", "idle CPU %", *(h for pair in per_label for h in pair), "RSS MiB", "peak RSS MiB"]
    table = Table(f"iris graph cost, {count:,} requests per load (lr/rf/vote mix)", headers)
    workers = [name for name in pids if name not in ("broker", "driver")]
    for name in [*workers, "all workers", "broker", "driver"]:
        names = workers if name == "all workers" else [name] if name in pids else []
        if not names:
            continue
        table.add(
            name,
            num(sum(idle[n] for n in names), 1),
            *(
                num(sum(figures[label][n] for n in names), 2)
                for label, _ in loads
                for figures in (per_load, above_idle)
            ),
            num(sum(memory[n]["rss"] for n in names), 0),
            num(sum(memory[n]["peak_rss"] for n in names), 0),
        )
    table.note = (
        "CPU s/10k: CPU seconds per 10,000 requests through the graph (not per event a worker saw); "
        "above idle: less the idle CPU rate over the load's wall time"
    )
    table.print()
    save(
        "cost",
        args,
        [table],
        requests=count,
        idle_seconds=idle_s,
        idle_cpu_percent=idle,
        cpu_s_per_10k=per_load,
        cpu_s_per_10k_above_idle=above_idle,
        answered=answered,
        memory_mib=memory,
    )


if __name__ == "__main__":
    main()
