"""Scaling out a CPU-heavy step: one model agent with 1 worker, then 2 workers, on the same broker.

The graph is ``bench/graphs.py:heavy_graph``: one step serving a 300-tree random forest (synthetic
data, 20 features; trained once and saved with joblib). Requests carry one row each. Each worker count
gets a fresh deployment; once its consumer group is stable, N requests are produced as fast as one
producer goes, which outruns the forest many times over, so the step drains a backlog. events/s is
the steady drain rate (middle 80% of the answers). On a 2-core machine the broker and the reader
share the cores with the workers, so 2 workers cannot reach 2x.

Run: python bench/scaling.py [--requests 30000] [--workers 1,2] [--quick]
Prints a table and writes bench/results/scaling.json.
"""

from __future__ import annotations

import graphs
from common import Deployment, Table, backlog, kafka, num, parser, row_requests, save, wait_for_group, warm_up


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="backlog size (default 30,000; 4,000 with --quick)")
    cli.add_argument("--workers", default="1,2", help="worker counts to compare, comma separated")
    args = cli.parse_args()
    count = args.requests or (4_000 if args.quick else 30_000)
    counts = [int(n) for n in args.workers.split(",")]

    print(f"loading (training once) the {graphs.HEAVY_TREES}-tree forest ...", flush=True)
    graphs.HeavyForest("forest").load()  # before any worker starts, so none of them trains it
    requests = row_requests(count, graphs.HEAVY_FEATURES)
    table = Table(
        f"heavy step ({graphs.HEAVY_TREES}-tree random forest), {count:,} one-row requests as a backlog",
        ["workers", "events/s", "speed-up", "overall events/s", "answered"],
    )
    runs = []
    with kafka(args.bootstrap) as broker:
        for workers in counts:
            with Deployment(broker.bootstrap, "heavy_graph", instances=workers) as deployment:
                print(f"{deployment.label}: warming up, then {count:,} requests ...", flush=True)
                warm_up(deployment, row_requests(20, graphs.HEAVY_FEATURES, seed=1))
                wait_for_group(broker.bootstrap, deployment.group(deployment.entry), workers)
                run = backlog(deployment, requests, pause=False)
            runs.append({"workers": workers, **run.summary()})
    base = runs[0]["steady_events_per_s"]
    for entry in runs:
        entry["speed_up"] = entry["steady_events_per_s"] / base
        table.add(
            entry["workers"],
            num(entry["steady_events_per_s"]),
            f"{entry['speed_up']:.2f}x",
            num(entry["overall_events_per_s"]),
            f"{entry['answered']:,}/{entry['sent']:,}",
        )
    table.print()
    save("scaling", args, [table], requests=count, trees=graphs.HEAVY_TREES, runs=runs)


if __name__ == "__main__":
    main()
