"""The cost of exactly-once: the iris lr path at-least-once against exactly-once, same run.

Agents pre, models, lr and post of the iris graph; each round deploys both guarantees afresh, in
an order rotated per round: (a) drain N requests produced as a backlog, (b) a steady 1,000 requests/s
for latency (bench/measure.py). Exactly-once runs each batch as a Kafka transaction and reads with
read_committed; at-least-once commits offsets every 100 ms. Figures are the median (min-max) of the
rounds; the throughput ratio is taken round by round.

Run: python bench/exactly_once.py [--requests 20000] [--rounds 3] [--quick]
Prints tables and writes bench/results/exactly_once.json.
"""

from __future__ import annotations

from common import Deployment, Target, iris_requests, kafka, num, parser, save, warm_up
from measure import cpu_table, ratios, run_system, runs_table, summarise, throughput_table
from stats import fmt, orders, rounds_for

GRAPHS = {"at_least_once": "iris_graph", "exactly_once": "iris_eos_graph"}
RATE = 1000


def warm(system: Target) -> None:
    warm_up(system, iris_requests(20, model="lr", seed=1))


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="backlog size (default 20,000; 3,000 with --quick)")
    cli.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    args = cli.parse_args()
    count = args.requests or (3_000 if args.quick else 20_000)
    drain, paced = iris_requests(count, model="lr"), iris_requests(count // 4, model="lr", seed=5)
    rounds = rounds_for(len(GRAPHS), args.rounds, quick=args.quick)
    runs: list[dict] = []
    with kafka(args.bootstrap) as broker:
        for number, order in enumerate(orders(list(GRAPHS), rounds), start=1):
            for position, guarantee in enumerate(order, start=1):
                target = Deployment(broker.bootstrap, GRAPHS[guarantee], agents=["pre", "models", "lr", "post"])
                print(f"round {number}/{rounds}, {guarantee}: {target.label}", flush=True)
                result = run_system(target, drain, paced, RATE, broker.pid, warm=warm)
                runs.append({"round": number, "position": position, "system": guarantee, **result})
                print(f"  {num(result['drain']['steady_events_per_s'])} events/s", flush=True)
    figures = summarise(runs, list(GRAPHS))
    for guarantee, figure in figures.items():
        figure["label"] = guarantee
    found = ratios(runs, "exactly_once", ["at_least_once"])
    main_table = throughput_table(
        f"iris lr path (pre, models, lr, post): {count:,}-request backlog, then {RATE:,}/s: "
        f"median (min-max) of {rounds} rounds",
        figures,
        RATE,
    )
    ratio = found["exactly_once/at_least_once"]
    main_table.note = f"exactly-once / at-least-once throughput: {fmt(ratio, 2)} (round by round)"
    tables = [main_table, cpu_table(figures, RATE), runs_table(runs, RATE)]
    for table in tables:
        table.print()
    save("exactly_once", args, tables, requests=count, rounds=rounds, ratio=ratio, systems=figures, runs=runs)


if __name__ == "__main__":
    main()
