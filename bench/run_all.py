"""Run every benchmark, then regenerate bench/RESULTS.md from bench/results/*.json.

Each script runs as its own process (its own embedded broker unless --bootstrap), one after the other;
one that fails is reported and the others still run. --quick is passed to each; --compare-tree PATH
to those that compare two checkouts of streamserve (floor, cost, mock_overhead); --report only
rewrites RESULTS.md from the JSON already there. The goals table comes from those results only
(bench/goals.py): a goal gets a verdict only from a full run of at least 3 runs.

A benchmark with no results here (bench/results/ is not committed: a fresh checkout, another machine)
keeps its section, its goal rows and its quotable figures from the RESULTS.md being replaced, marked as
carried from that report, with that report's machine: a partial rerun never drops what it did not rerun.

Run: python bench/run_all.py [--quick] [--only floor,latency] [--compare-tree PATH]
                             [--bootstrap HOST:PORT] [--report]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import BENCH, RESULTS, ROOT, environment, parser
from goals import also_measured, goals_table, quotes

# (name, one line on what it measures); each is bench/<name>.py writing bench/results/<name>.json
BENCHMARKS = [
    ("demo", "the README's `streamserve demo`: 1,000 requests through the iris graph's seven workers"),
    ("floor", "streamserve's iris lr path against the same hops hand-written on aiokafka and on confluent-kafka"),
    ("latency", "end-to-end latency through the deployed iris graph at steady rates and open loop"),
    ("exactly_once", "the cost of exactly-once against at-least-once on the iris lr path"),
    ("scaling", "a CPU-heavy model step with 1 and 2 workers"),
    ("cost", "CPU per request of the whole deployment (workers, broker, load generator), memory, idle CPU"),
    ("tuning", "the iris lr path under AgentSettings overrides: events/s, latency and CPU per setting"),
    ("peer", "MLServer 1.7 in Kafka mode, tuned, on the same broker; MLRun's mock server against ours"),
    ("hotpath", "py-spy profiles of agent workers under load; producer and codec costs per event"),
    ("mock_overhead", "mock-server framework overhead per step, in-process"),
    ("frameworks", "the built-in model servers' own cost per event over each framework's predict, batched and not"),
    ("soak", "the iris graph at a fixed rate for 10 minutes: memory growth, nothing lost, p99 per minute"),
]
COMPARES_TREES = {"floor", "cost", "mock_overhead"}
NO_BROKER = {"mock_overhead", "frameworks"}


def run(name: str, args: Any) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / f"{name}.py")]
    command += ["--quick"] if args.quick else []
    if args.bootstrap and name not in NO_BROKER:
        command += ["--bootstrap", args.bootstrap]
    if args.compare_tree and name in COMPARES_TREES:
        command += ["--compare-tree", str(args.compare_tree)]
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


class Earlier:
    """The report being replaced: its sections, goal rows, quotable lines and machine, by name."""

    def __init__(self, text: str) -> None:
        self.sections: dict[str, list[str]] = {}
        self.goal_rows: dict[str, str] = {}
        self.quotes: list[str] = []
        self.cpu = ""
        current: list[str] | None = None
        in_quotes = False
        for line in text.splitlines():
            if line.startswith("## "):
                current = self.sections.setdefault(line[3:].split(":", 1)[0], []) if ":" in line else None
                in_quotes = False
                continue
            if current is not None:
                current.append(line)
            if line.startswith("| CPU |"):
                self.cpu = line.split("|")[2].strip()
            elif line.startswith("| ") and "`bench/" in line:
                self.goal_rows[line.split(" | ", 1)[0][2:]] = line
            elif line.startswith("**figures to quote**"):
                in_quotes = True
            elif in_quotes and line.startswith("- "):
                self.quotes.append(line)

    def mark(self) -> str:
        """What a carried part says of where it comes from."""
        return f"carried from the previous report ({self.cpu})"

    def goal_row(self, cells: list[Any]) -> list[Any]:
        """``cells``, or where they say "not measured", the earlier report's row for the same goal."""
        old = self.goal_rows.get(str(cells[0]))
        if cells[1] != "not measured" or old is None:
            return cells
        old_cells = [cell.strip() for cell in old.strip().strip("|").split(" | ")]
        if "carried from" not in old_cells[2]:  # carried once more: it keeps the machine it names
            old_cells[2] += f", {self.mark()}"
        return old_cells

    def section(self, name: str) -> list[str] | None:
        """The earlier report's section ``name``, marked as carried (once: it keeps the first mark)."""
        lines = self.sections.get(name)
        if not lines or any("No results yet." in line for line in lines):
            return None
        kept = [line for line in lines if "**failed** (exit" not in line]  # a run of that report: said anew
        text = "\n".join(kept).strip("\n").splitlines()  # its blank lines at either end are the report's
        if not any(line.startswith("> Not rerun") for line in text):
            text = [f"> Not rerun: {self.mark()}.", "", *text]
        return [*text, ""]


def report(runs: dict[str, dict[str, Any]], command: str, earlier: Earlier) -> str:
    env = environment()
    missing = [name for name, _ in BENCHMARKS if not (RESULTS / f"{name}.json").is_file()]
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
        *markdown({**goals_table(), "rows": [earlier.goal_row(cells) for cells in goals_table()["rows"]]}),
        "Every figure is the median (min-max) of its runs; in each round the systems compared run in an order",
        "rotated per round, and each run records the 1-minute load average at its start and end and the CPU share",
        'taken by processes outside it (see each benchmark\'s "every run" table). Throughput (events/s) is the',
        "steady drain rate: answers per second between the 10th and 90th percentile of the answers' Kafka",
        'timestamps; "overall" counts from the moment the deployment could start to the last answer read. Latency',
        "runs from the producer's send call to the moment the reader has the prediction.",
        "",
    ]
    others = also_measured()
    if others:
        lines += ["**also measured in these runs**", "", *others, ""]
    quoted = quotes() + [
        line if "carried from" in line else f"{line} ({earlier.mark()})"
        for line in earlier.quotes
        if any(f"bench/{name}.py" in line for name in missing)
    ]
    if quoted:
        lines += ["**figures to quote** (the README's claims should be these, word for word)", "", *quoted, ""]
    for name, about in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        lines += [f"## {name}: {about}", ""]
        ran = runs.get(name)
        if ran and ran["exit"] != 0:
            lines += [f"`{ran['command']}` **failed** (exit {ran['exit']}); figures below, if any, are older.", ""]
        if not path.is_file():
            lines += earlier.section(name) or ["No results yet.", ""]
            continue
        data = json.loads(path.read_text())
        if not isinstance(data, dict):  # an older script's format
            lines += [f"bench/results/{name}.json is in an older format: rerun `python bench/{name}.py`.", ""]
            continue
        load = data["environment"].get("load_average", [])
        lines += [
            f"Command: `{data['command']}` ({data['date']}, load average {', '.join(map(str, load))} at its end)",
            "",
        ]
        if data.get("quick"):
            lines += ["> --quick run: a smoke test of the script, not a measurement.", ""]
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
    cli.add_argument("--compare-tree", type=Path, help="another streamserve checkout for floor, cost, mock_overhead")
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
    earlier = Earlier(out.read_text() if out.is_file() else "")
    out.write_text(report(runs, command, earlier) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    for name, ran in done.items():
        outcome = "ok" if ran["exit"] == 0 else f"FAILED (exit {ran['exit']})"
        print(f"  {name:14} {outcome:16} {ran['seconds']:5d} s")
    if any(ran["exit"] for ran in done.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
