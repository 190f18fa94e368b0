"""`streamserve demo` as a benchmark: the iris graph as seven workers, 1,000 requests.

The same run as the README's demo command (1% of the requests malformed on purpose),
recorded: throughput, latency, dead letters, and mismatches against the mock server.

Run: python bench/demo.py [--requests 1000] [--quick]
Prints a table and writes bench/results/demo.json.
"""

from __future__ import annotations

from common import Table, kafka, num, parser, save

from pipeline.demo import run_demo


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--requests", type=int, help="requests (default 1,000; 300 with --quick)")
    args = cli.parse_args()
    count = args.requests or (300 if args.quick else 1000)
    with kafka(args.bootstrap) as broker:
        summary = run_demo(broker.bootstrap, count=count)
    table = Table(
        f"streamserve demo: iris graph, 7 workers, {count:,} requests as fast as possible",
        ["sent", "answered", "dead letters", "unanswered", "mismatches", "events/s", "p50 ms", "p99 ms"],
    )
    table.add(
        summary.sent,
        summary.answered,
        summary.dead_letters,
        summary.missing,
        summary.mismatches,
        num(summary.events_per_s),
        num(summary.p50_ms, 1),
        num(summary.p99_ms, 1),
    )
    table.note = "events/s: answers over the time from the first request sent to the last answer read"
    table.print()
    save("demo", args, [table], summary=vars(summary))


if __name__ == "__main__":
    main()
