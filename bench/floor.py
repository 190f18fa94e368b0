"""The floor: streamserve's iris lr path against the same path written by hand on aiokafka.

Same broker, same run, same requests (all with header model=lr): (a) the raw chain of four hop
processes (bench/rawchain.py), (b) the iris graph deployed as Workers for agents pre, models, lr and
post. Each drains N requests produced as a backlog (its entry process stopped meanwhile); events/s is
the steady drain rate (middle 80% of the answers), "overall" counts from the entry's restart.

Run: python bench/floor.py [--requests 50000] [--quick]
Prints a table and writes bench/results/floor.json.
"""

from __future__ import annotations

from common import Deployment, Table, backlog, iris_requests, kafka, num, parser, save, warm_up
from rawchain import RawChain


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="backlog size (default 50,000; 5,000 with --quick)")
    args = cli.parse_args()
    count = args.requests or (5_000 if args.quick else 50_000)
    requests = iris_requests(count, model="lr")
    rows = sum(len(request.body["inputs"]) for request in requests)

    table = Table(
        f"iris lr path, {count:,} requests ({rows:,} rows) as a backlog",
        ["system", "processes", "events/s", "overall events/s", "answered", "dead letters"],
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
                processes = len(target.pids())
            figures[key] = {"system": target.label, **run.summary()}
            table.add(
                target.label,
                processes,
                num(run.steady_rate()),
                num(run.overall_rate()),
                f"{run.answered:,}/{run.sent:,}",
                run.dead,
            )
    ratio = figures["streamserve"]["steady_events_per_s"] / figures["raw"]["steady_events_per_s"]
    overall = figures["streamserve"]["overall_events_per_s"] / figures["raw"]["overall_events_per_s"]
    table.note = f"streamserve / raw: {ratio:.2f} (steady), {overall:.2f} (overall)"
    table.print()
    save("floor", args, [table], requests=count, rows=rows, ratio=ratio, ratio_overall=overall, runs=figures)


if __name__ == "__main__":
    main()
