"""`streamserve demo` as a benchmark: the iris graph as seven workers, 1,000 requests.

The same run as the README's demo command (1% of the requests malformed on purpose), --runs times
on the same broker, each deploying afresh (a cold start: the workers join their groups while the
requests wait): throughput and latency as the median (min-max) of the runs, with every run's dead
letters, losses and mismatches against the mock server.

Run: python bench/demo.py [--requests 1000] [--runs 3] [--quick]
Prints a table and writes bench/results/demo.json.
"""

from __future__ import annotations

from common import Table, kafka, parser, save
from stats import fmt, spread

from pipeline.demo import run_demo

TOTALS = ("sent", "answered", "dead_letters", "missing", "mismatches")


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="requests (default 1,000; 300 with --quick)")
    cli.add_argument("--runs", type=int, help="fresh deployments (default 3; 1 with --quick)")
    args = cli.parse_args()
    count = args.requests or (300 if args.quick else 1000)
    with kafka(args.bootstrap) as broker:
        summaries = [run_demo(broker.bootstrap, count=count) for _ in range(args.runs or (1 if args.quick else 3))]
    table = Table(
        f"streamserve demo: iris graph, 7 workers, {count:,} requests as fast as possible, "
        f"median (min-max) of {len(summaries)} run{'s' if len(summaries) != 1 else ''}",
        ["sent", "answered", "dead letters", "unanswered", "mismatches", "events/s", "p50 ms", "p99 ms"],
    )
    table.add(
        *(sum(getattr(summary, name) for summary in summaries) for name in TOTALS),
        fmt(spread(summary.events_per_s for summary in summaries)),
        fmt(spread(summary.p50_ms for summary in summaries), 1),
        fmt(spread(summary.p99_ms for summary in summaries), 1),
    )
    table.note = (
        "events/s: answers over the time from the first request sent to the last answer read; sent to "
        "mismatches: totals over the runs"
    )
    table.print()
    save("demo", args, [table], summary=vars(summaries[-1]), runs=[vars(summary) for summary in summaries])


if __name__ == "__main__":
    main()
