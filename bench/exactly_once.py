"""The cost of exactly-once: the iris lr path at-least-once against exactly-once, same run.

Agents pre, models, lr and post of the iris graph; (a) drain N requests produced as a backlog,
(b) a steady 1,000 requests/s for latency. Exactly-once runs each batch as a Kafka transaction
and reads with read_committed; at-least-once commits offsets every 100 ms.

Run: python bench/exactly_once.py [--requests 20000] [--quick]
Prints a table and writes bench/results/exactly_once.json.
"""

from __future__ import annotations

from common import Deployment, Table, backlog, iris_requests, kafka, num, parser, run_load, save, warm_up


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="backlog size (default 20,000; 3,000 with --quick)")
    args = cli.parse_args()
    count = args.requests or (3_000 if args.quick else 20_000)
    table = Table(
        f"iris lr path (pre, models, lr, post): {count:,}-request backlog, then 1,000/s",
        ["guarantee", "events/s", "p50 ms at 1,000/s", "p99 ms at 1,000/s", "answered"],
    )
    figures = {}
    with kafka(args.bootstrap) as broker:
        for guarantee, factory in (("at_least_once", "iris_graph"), ("exactly_once", "iris_eos_graph")):
            target = Deployment(broker.bootstrap, factory, agents=["pre", "models", "lr", "post"])
            print(f"{target.label}: warming up ...", flush=True)
            with target:
                warm_up(target, iris_requests(20, model="lr", seed=1))
                drained = backlog(target, iris_requests(count, model="lr"))
                steady = run_load(target, iris_requests(count // 4, model="lr", seed=5), rate=1000)
            latency = steady.latency_ms()
            figures[guarantee] = {"backlog": drained.summary(), "steady": steady.summary()}
            table.add(
                guarantee,
                num(drained.steady_rate()),
                num(latency["p50"], 1),
                num(latency["p99"], 1),
                f"{drained.answered + steady.answered:,}/{drained.sent + steady.sent:,}",
            )
    ratio = (
        figures["exactly_once"]["backlog"]["steady_events_per_s"]
        / figures["at_least_once"]["backlog"]["steady_events_per_s"]
    )
    table.note = f"exactly-once / at-least-once throughput: {ratio:.2f}"
    table.print()
    save("exactly_once", args, [table], requests=count, ratio=ratio, runs=figures)


if __name__ == "__main__":
    main()
