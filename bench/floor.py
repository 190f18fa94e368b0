"""The floor: streamserve's iris lr path against the same path written by hand on aiokafka.

Same broker, same run, same requests (all with header model=lr): (a) the raw chain of four hop
processes (bench/rawchain.py), (b) the iris graph deployed as Workers for agents pre, models, lr and
post. Each drains N requests produced as a backlog (its entry process stopped meanwhile); events/s is
the steady drain rate (middle 80% of the answers), "overall" counts from the entry's restart. Then each
takes --rate requests/s for --seconds: end-to-end latency and how busy the machine's cores were, the
latency floor that the hand-written chain sets on this machine.

Run: python bench/floor.py [--requests 50000] [--rate 1000] [--seconds 10] [--quick]
Prints a table and writes bench/results/floor.json.
"""

from __future__ import annotations

from common import (
    Deployment,
    Table,
    backlog,
    iris_requests,
    kafka,
    machine_busy,
    num,
    parser,
    run_load,
    save,
    warm_up,
)
from rawchain import RawChain


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="backlog size (default 50,000; 5,000 with --quick)")
    cli.add_argument("--rate", type=float, default=1000, help="the steady load's events/s")
    cli.add_argument("--seconds", type=float, help="seconds of steady load (default 10; 3 with --quick)")
    args = cli.parse_args()
    count = args.requests or (5_000 if args.quick else 50_000)
    steady_count = int(args.rate * (args.seconds or (3 if args.quick else 10)))
    at = f"at {args.rate:,.0f}/s"
    requests = iris_requests(count, model="lr")
    rows = sum(len(request.body["inputs"]) for request in requests)

    table = Table(
        f"iris lr path, {count:,} requests ({rows:,} rows) as a backlog",
        [
            "system",
            "processes",
            "events/s",
            "overall events/s",
            "answered",
            "dead letters",
            f"p50 ms {at}",
            f"p99 ms {at}",
            f"CPU busy % {at}",
        ],
    )
    figures = {}
    with kafka(args.bootstrap) as broker:
        for key, target in (
            ("raw", RawChain(broker.bootstrap)),
            ("streamserve", Deployment(broker.bootstrap, "iris_graph", agents=["pre", "models", "lr", "post"])),
        ):
            print(f"{target.label}: warming up, then {count:,} requests ...", flush=True)
            with target:
                warm_up(target, iris_requests(20, model="lr", seed=1))
                run = backlog(target, requests)
                with machine_busy() as cpu:
                    steady = run_load(target, iris_requests(steady_count, model="lr", seed=3), rate=args.rate)
                processes = len(target.pids())
            latency = steady.latency_ms()
            figures[key] = {"system": target.label, **run.summary(), "steady_load": {**steady.summary(), **cpu}}
            table.add(
                target.label,
                processes,
                num(run.steady_rate()),
                num(run.overall_rate()),
                f"{run.answered:,}/{run.sent:,}",
                run.dead,
                num(latency["p50"], 1),
                num(latency["p99"], 1),
                num(cpu["busy_pct"]),
            )
    ratio = figures["streamserve"]["steady_events_per_s"] / figures["raw"]["steady_events_per_s"]
    overall = figures["streamserve"]["overall_events_per_s"] / figures["raw"]["overall_events_per_s"]
    table.note = (
        f"streamserve / raw: {ratio:.2f} (steady), {overall:.2f} (overall); CPU busy: the machine's cores "
        "busy during the steady load (workers, broker and this load generator together)"
    )
    table.print()
    save("floor", args, [table], requests=count, rows=rows, ratio=ratio, ratio_overall=overall, runs=figures)


if __name__ == "__main__":
    main()
