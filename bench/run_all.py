"""Run every benchmark, then regenerate bench/RESULTS.md from bench/results/*.json.

Each script runs as its own process (its own embedded broker unless --bootstrap), one after the other;
one that fails is reported and the others still run. --quick is passed to each (mock_overhead gets a
smaller --repeat); --report only rewrites RESULTS.md from the JSON already there.

Run: python bench/run_all.py [--quick] [--only floor,latency] [--bootstrap HOST:PORT] [--report]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any

from common import BENCH, RESULTS, ROOT, environment, parser

# (name, one line on what it measures); each is bench/<name>.py writing bench/results/<name>.json
BENCHMARKS = [
    ("demo", "the README's `streamserve demo`: 1,000 requests through the iris graph's seven workers"),
    ("floor", "streamserve's iris lr path against the same hops written by hand on aiokafka"),
    ("latency", "end-to-end latency through the deployed iris graph at steady rates and open loop"),
    ("exactly_once", "the cost of exactly-once against at-least-once on the iris lr path"),
    ("scaling", "a CPU-heavy model step with 1 and 2 workers"),
    ("cost", "CPU seconds per 10,000 requests, memory and idle CPU of every iris worker"),
    ("peer", "MLServer 1.7 in Kafka mode on the same broker; MLRun's mock server against ours"),
    ("hotpath", "py-spy profiles of agent workers under load; producer and codec costs per event"),
    ("mock_overhead", "mock-server framework overhead per step, in-process"),
    ("soak", "the iris graph at a fixed rate for 10 minutes: memory growth, nothing lost, p99 per minute"),
]


def run(name: str, args: Any) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / f"{name}.py")]
    if name == "mock_overhead":
        command += ["--repeat", "2000"] if args.quick else []
    else:
        command += ["--quick"] if args.quick else []
        command += ["--bootstrap", args.bootstrap] if args.bootstrap else []
    shown = "python " + " ".join(str(part).replace(f"{ROOT}/", "") for part in command[1:])
    print(f"\n=== {shown}", flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=ROOT).returncode
    return {"command": shown, "exit": code, "seconds": round(time.monotonic() - started)}


def markdown(table: dict[str, Any]) -> list[str]:
    def row(cells: list[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    lines = [f"**{table['title']}**", "", row(table["headers"]), row(["---"] * len(table["headers"]))]
    lines += [row(cells) for cells in table["rows"]]
    if table.get("note"):
        lines += ["", *(f"{line}  " for line in table["note"].splitlines())]
    return [*lines, ""]


def mock_overhead_tables(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mock_overhead.json is a plain list of rows: shape it as the other scripts' tables."""
    return [
        {
            "title": "mock server: graph call against the same work called directly",
            "headers": ["graph", "steps", "graph µs", "direct µs", "overhead µs/step"],
            "rows": [
                [
                    r["graph"],
                    r["steps"],
                    f"{r['graph_us']:.1f}",
                    f"{r['direct_us']:.1f}",
                    f"{r['overhead_us_per_step']:.2f}",
                ]
                for r in rows
            ],
        }
    ]


def _result(name: str) -> Any:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def goals() -> dict[str, Any]:
    """The performance issue's four goals, each with the figure measured, from the JSON results."""
    rows = []

    def add(goal: str, measured: str, met: bool) -> None:
        rows.append([goal, measured, "met" if met else "**not met**"])

    floor = _result("floor")
    if floor:
        add("iris lr path >= 60% of the raw aiokafka chain's events/s", f"{floor['ratio']:.2f}", floor["ratio"] >= 0.6)
    peer = _result("peer")
    if peer and peer["mlserver"]["status"] == "ok":
        runs = peer["mlserver"]["runs"]
        ours = next(run for label, run in runs.items() if label.startswith("streamserve"))
        theirs = next(run for label, run in runs.items() if label.endswith("defaults"))
        ratio = ours["open_loop"]["steady_events_per_s"] / theirs["open_loop"]["steady_events_per_s"]
        add(">= 10x MLServer Kafka mode's events/s, same broker and model", f"{ratio:.1f}x", ratio >= 10)
    latency = _result("latency")
    points = {point["label"]: point for point in (latency or {}).get("scenarios", {}).get("lr", [])}
    if "1,000/s" in points:
        p99 = points["1,000/s"]["latency_ms"]["p99"]
        add("p99 <= 30 ms at 1,000 events/s through the iris graph (lr path)", f"{p99:,.0f} ms", p99 <= 30)
    mock = _result("mock_overhead")
    if mock:  # the framework alone: every graph but the one that also times scikit-learn's call
        framework = [row for row in mock if not row["graph"].endswith("-> lr -> post")]
        worst = max(row["overhead_us_per_step"] for row in framework)
        spread = "; ".join(f"{row['overhead_us_per_step']:.1f} ({row['graph']})" for row in mock)
        add("mock server framework overhead <= 10 µs per step", f"{spread} µs", worst <= 10)
    return {"title": "the goals, as last measured", "headers": ["goal", "measured", ""], "rows": rows}


def report(runs: dict[str, dict[str, Any]], command: str) -> str:
    env = environment()
    found = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    quick = any(isinstance(data, dict) and data.get("quick") for data in found)
    versions = " / ".join(env[name] for name in ("aiokafka", "numpy", "scikit-learn", "msgpack"))
    lines = [
        "# streamserve benchmark results",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Each section names the",
        "command that produced it; bench/results/<name>.json holds every figure.",
        "",
    ]
    if quick:
        lines += [
            "> **Some figures come from --quick runs**: small sizes, a smoke test of the scripts. Do not quote them.",
            "",
        ]
    lines += [
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {env['cpu']}, {env['cores']} cores |",
        f"| memory | {env['memory_gib']} GiB |",
        f"| OS | {env['os']} |",
        f"| Python | {env['python']} |",
        f"| Kafka | {env['kafka']} |",
        f"| aiokafka / numpy / scikit-learn / msgpack | {versions} |",
        f"| load average when this report was written (1, 5, 15 min) | {', '.join(map(str, env['load_average']))} |",
        "",
        "## Goals",
        "",
        *markdown(goals()),
        "Throughput (events/s) is the steady drain rate: answers per second between the 10th and 90th percentile",
        'of the answers\' Kafka timestamps; "overall" counts from the moment the deployment could start to the last',
        "answer read. Latency runs from the producer's send call to the moment the reader has the prediction.",
        "",
    ]
    for name, about in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        lines += [f"## {name}: {about}", ""]
        ran = runs.get(name)
        if ran and ran["exit"] != 0:
            lines += [f"`{ran['command']}` **failed** (exit {ran['exit']}); figures below, if any, are older.", ""]
        if not path.is_file():
            lines += ["No results yet.", ""]
            continue
        data = json.loads(path.read_text())
        if isinstance(data, list):  # mock_overhead.py's own format
            command = ran["command"] if ran else f"python bench/{name}.py"
            lines += [f"Command: `{command}`", "", *[line for t in mock_overhead_tables(data) for line in markdown(t)]]
            continue
        load = data["environment"].get("load_average", [])
        lines += [
            f"Command: `{data['command']}` ({data['date']}, load average {', '.join(map(str, load))})",
            "",
        ]
        status = data.get("status")
        if status:
            lines += [f"Status: {status}", ""]
        for table in data.get("tables", []):
            lines += markdown(table)
        if name == "latency" and data.get("plot"):
            lines += [f"![latency against rate]({data['plot'].removeprefix('bench/')})", ""]
    return "\n".join(lines)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--only", help="benchmarks to run, comma separated (default all)")
    cli.add_argument("--report", action="store_true", help="only regenerate RESULTS.md from bench/results/*.json")
    args = cli.parse_args()
    names = args.only.split(",") if args.only else [name for name, _ in BENCHMARKS]
    unknown = set(names) - {name for name, _ in BENCHMARKS}
    if unknown:
        cli.error(f"unknown benchmarks {sorted(unknown)}")
    ledger = RESULTS / "run_all.json"  # the commands run_all ran, for a later --report
    runs = json.loads(ledger.read_text()) if ledger.is_file() else {}
    done = {} if args.report else {name: run(name, args) for name in names}
    if done:
        runs.update(done)
        ledger.write_text(json.dumps(runs, indent=2))
    out = BENCH / "RESULTS.md"
    command = " ".join(["python", "bench/run_all.py", *sys.argv[1:]])
    out.write_text(report(runs, command) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    for name, ran in done.items():
        outcome = "ok" if ran["exit"] == 0 else f"FAILED (exit {ran['exit']})"
        print(f"  {name:14} {outcome:16} {ran['seconds']:5d} s")
    if any(ran["exit"] for ran in done.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
