"""streamserve under different AgentSettings: events/s, latency and CPU per event at each setting.

For comparing linger, fetch, batch and commit settings: every setting named in --sweep deploys the
iris lr path (agents pre, models, lr and post) with those AgentSettings overrides, through
bench/worker.py (any field of the checkout's AgentSettings; "default" changes nothing). Each round
deploys every setting afresh, in an order rotated per round, and measures (bench/measure.py) a
backlog of N requests (events/s, CPU µs per event draining) and --rate requests/s for --seconds
(latency, CPU µs per event of the workers, the broker and this driver, the machine's busy share).
Figures are the median (min-max) of the rounds; ratios to "default" are taken round by round.

Run: python bench/tuning.py [--sweep default batch_bytes=16384 "linger_ms=1,fetch_max_wait_ms=5"]
                            [--requests 20000] [--rate 1000] [--seconds 10] [--rounds N]
                            [--compare-tree PATH] [--quick]
Prints tables and writes bench/results/tuning.json.
"""

from __future__ import annotations

from pathlib import Path

import overrides
from common import Deployment, Table, Target, iris_requests, kafka, num, parser, save, warm_up
from measure import cpu_table, ratios, run_system, runs_table, summarise, throughput_table
from stats import fmt, orders, rounds_for

DEFAULT_SWEEP = ["default", "batch_bytes=16384", "linger_ms=1"]  # Kafka's batch size; a shorter linger
LR_PATH = ["pre", "models", "lr", "post"]


def warm(system: Target) -> None:
    warm_up(system, iris_requests(20, model="lr", seed=1))


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--sweep", nargs="+", default=DEFAULT_SWEEP, help="settings to compare, each name=value,...")
    cli.add_argument("--requests", type=int, help="backlog size (default 20,000; 3,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--seconds", type=float, help="seconds of steady load (default 10; 3 with --quick)")
    cli.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    cli.add_argument("--compare-tree", type=Path, help="run the settings on this streamserve checkout instead")
    args = cli.parse_args()
    try:
        settings = {text: overrides.check(text) for text in args.sweep}
    except ValueError as exc:
        cli.error(str(exc))
    count = args.requests or (3_000 if args.quick else 20_000)
    drain = iris_requests(count, model="lr")
    paced = iris_requests(int(args.rate * (args.seconds or (3 if args.quick else 10))), model="lr", seed=3)
    systems = list(settings)
    rounds = rounds_for(len(systems), args.rounds or (2 if args.quick else 3))
    runs: list[dict] = []
    with kafka(args.bootstrap) as broker:
        for number, order in enumerate(orders(systems, rounds), start=1):
            for position, text in enumerate(order, start=1):
                target = Deployment(
                    broker.bootstrap, "iris_graph", agents=LR_PATH, tree=args.compare_tree, settings=settings[text]
                )
                print(f"round {number}/{rounds}, {overrides.label(settings[text])}", flush=True)
                result = run_system(target, drain, paced, args.rate, broker.pid, warm=warm)
                runs.append({"round": number, "position": position, "system": text, **result})
                print(f"  {num(result['drain']['steady_events_per_s'])} events/s", flush=True)
    figures = summarise(runs, systems)
    for text, figure in figures.items():
        figure["label"] = overrides.label(settings[text])
    base = systems[0]
    speed = {name: ratios(runs, name, [base])[f"{name}/{base}"] for name in systems[1:]}  # each setting over base
    cpu = {name: ratios(runs, name, [base], figure="cpu_system_at_rate")[f"{name}/{base}"] for name in systems[1:]}
    main_table = throughput_table(
        f"iris lr path under AgentSettings overrides: {count:,}-request backlog, then {args.rate:,.0f}/s: "
        f"median (min-max) of {rounds} rounds",
        figures,
        args.rate,
    )
    main_table.note = f"against {overrides.label(settings[base])}, round by round: " + "; ".join(
        f"{overrides.label(settings[name])}: events/s {fmt(value, 2)}x, "
        f"worker CPU µs/event at the rate {fmt(cpu[name], 2)}x"
        for name, value in speed.items()
    )
    tables: list[Table] = [main_table, cpu_table(figures, args.rate), runs_table(runs, args.rate)]
    for table in tables:
        table.print()
    save(
        "tuning",
        args,
        tables,
        requests=count,
        rate=args.rate,
        rounds=rounds,
        sweep={text: settings[text] for text in systems},
        systems=figures,
        ratios={"events_per_s": speed, "cpu_system_at_rate": cpu},
        runs=runs,
    )


if __name__ == "__main__":
    main()
