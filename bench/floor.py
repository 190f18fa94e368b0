"""The floors: streamserve's iris lr path against the same four hops written by hand, same run.

Systems, each on the same broker with the same requests (all for model lr):
- streamserve: the iris graph's agents pre, models, lr and post as worker processes;
- aiokafka: the hops by hand on aiokafka, as well as we know how (bench/rawchain.py, bench/hops.py);
- confluent: the hops by hand on confluent-kafka / librdkafka (bench/confluentchain.py);
- before (with --compare-tree PATH): streamserve from another checkout, e.g. the commit before a
  runtime change, its workers run with PYTHONPATH at it.

Every round starts each system afresh, in an order rotated per round (so each goes first once), and
measures (a) a backlog of N requests drained (produced while the entry process is stopped): events/s
is the steady drain rate, answers over the middle 80% of their Kafka timestamps; "overall" counts from
the entry's restart; (b) --rate requests/s for --seconds: end-to-end latency. Both with CPU µs per
event of the system's processes, the broker and this driver (bench/measure.py). Each run records the
1-minute load average at its start and end and the CPU share of processes outside the run. Figures
are the median (min-max) of the rounds; ratios are taken round by round, then the median.

--settings applies AgentSettings overrides to every system (the chains take the same values).

Run: python bench/floor.py [--requests 50000] [--rate 1000] [--seconds 10] [--rounds N]
                           [--systems streamserve,aiokafka,confluent] [--compare-tree PATH]
                           [--settings linger_ms=5,...] [--quick]
Prints tables and writes bench/results/floor.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import overrides
from chains import Chain, missing
from common import ROOT, Deployment, Target, checkout, iris_requests, kafka, num, parser, save, warm_up
from measure import cpu_table, ratios, run_system, runs_table, summarise, throughput_table
from stats import fmt, orders, rounds_for

SYSTEMS = ("streamserve", "aiokafka", "confluent", "fused")
LR_PATH = ["pre", "models", "lr", "post"]
FUSED_LR_PATH = ["pre", "lr"]  # `--fuse`: models runs inside pre, post inside lr: two hops, not the same hops


def target(system: str, bootstrap: str, args: Any) -> Target:
    """A fresh instance of ``system``."""
    if system in ("aiokafka", "confluent"):
        return Chain(bootstrap, system, args.overrides)  # type: ignore[arg-type]
    tree = args.compare_tree if system == "before" else None
    if system == "fused":
        return Deployment(bootstrap, "iris_graph", agents=FUSED_LR_PATH, settings=args.overrides, fuse=True)
    deployment = Deployment(bootstrap, "iris_graph", agents=LR_PATH, tree=tree, settings=args.overrides)
    if args.compare_tree and tree is None:  # name both checkouts when two are compared
        deployment.label += f" @ {checkout(ROOT)}"
    return deployment


def warm(system: Target) -> None:
    warm_up(system, iris_requests(20, model="lr", seed=1))


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="backlog size (default 50,000; 5,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--seconds", type=float, help="seconds of steady load (default 10; 3 with --quick)")
    cli.add_argument("--rounds", type=int, help="rounds (default: 3, or one per system if more; 2 with --quick)")
    cli.add_argument("--systems", default=",".join(SYSTEMS), help="systems to run, comma separated")
    cli.add_argument("--compare-tree", type=Path, help="another streamserve checkout, run as system 'before'")
    cli.add_argument("--settings", default="", help="AgentSettings overrides for every system, name=value,...")
    args = cli.parse_args()
    try:
        args.overrides = overrides.check(args.settings)
    except ValueError as exc:
        cli.error(str(exc))
    count = args.requests or (5_000 if args.quick else 50_000)
    requests = iris_requests(count, model="lr")
    paced = iris_requests(int(args.rate * (args.seconds or (3 if args.quick else 10))), model="lr", seed=3)
    rows = sum(len(request.body["inputs"]) for request in requests)

    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        cli.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    skipped = {system: missing(system) for system in systems if system in ("aiokafka", "confluent") and missing(system)}
    systems = [system for system in systems if system not in skipped] + (["before"] if args.compare_tree else [])
    rounds = rounds_for(len(systems), args.rounds, quick=args.quick)
    runs: list[dict] = []
    with kafka(args.bootstrap) as broker:
        for number, order in enumerate(orders(systems, rounds), start=1):
            for position, system in enumerate(order, start=1):
                instance = target(system, broker.bootstrap, args)
                print(f"round {number}/{rounds}, {instance.label}: {count:,} requests, then {args.rate:,.0f}/s")
                result = run_system(instance, requests, paced, args.rate, broker.pid, warm=warm)
                runs.append({"round": number, "position": position, "system": system, **result})
                print(f"  {num(result['drain']['steady_events_per_s'])} events/s", flush=True)
    figures = summarise(runs, systems)
    found = ratios(runs, "streamserve", systems)
    main_table = throughput_table(
        f"iris lr path, {count:,} requests ({rows:,} rows) as a backlog, then {args.rate:,.0f}/s: "
        f"median (min-max) of {rounds} rounds",
        figures,
        args.rate,
    )
    main_table.note = "; ".join(f"{name}: {fmt(value, 2)}" for name, value in found.items())
    main_table.note += " (events/s, round by round)" if found else ""
    if skipped:
        main_table.note += "\n" + "; ".join(f"{system} skipped: {why}" for system, why in skipped.items())
    tables = [main_table, cpu_table(figures, args.rate), runs_table(runs, args.rate)]
    for table in tables:
        table.print()
    save(
        "floor",
        args,
        tables,
        requests=count,
        rows=rows,
        rate=args.rate,
        rounds=rounds,
        settings=args.overrides,
        compare_tree=str(args.compare_tree) if args.compare_tree else None,
        skipped=skipped,
        systems=figures,
        ratios=found,
        runs=runs,
    )


if __name__ == "__main__":
    main()
