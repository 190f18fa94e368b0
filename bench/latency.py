"""End-to-end latency through the deployed iris graph, from the produce call to the prediction read.

All seven agents of the iris graph run as worker processes. Requests are the demo's (1-3 rows):
first all for lr (pre -> router -> lr -> post, the goal's path and the floor's), then spread over
lr, rf and vote (vote adds a fan-out, the slower forest and a join); --model picks one. Each steady
rate runs for --seconds; "max" sends open loop (as fast as one producer goes), so its latency is
mostly time spent queued. Percentiles are over every request of a run.

--runs runs (default 3), each on a fresh deployment after an unmeasured 1,000/s warm-up, the rates
ascending in odd runs and descending in even ones (a machine warming up over a run favours neither
end); every figure is the median (min-max) of the runs, and each run records the 1-minute load
average at its start and end and the CPU share of processes outside it. A second table per scenario
splits the time per agent, from the Kafka timestamps of each event's record on the agent's input and
outputs, pooled over the runs.

Run: python bench/latency.py [--rates 500,1000,2000,5000] [--seconds 10] [--max-requests 20000]
                             [--runs 3] [--quick]
Prints tables, writes bench/results/latency.json and the plot bench/latency.png (needs matplotlib).
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from typing import Any

from common import (
    BENCH,
    ROOT,
    Deployment,
    Table,
    answer_id,
    iris_requests,
    kafka,
    num,
    parser,
    percentiles,
    run_load,
    save,
    warm_up,
)
from cpu import Conditions, describe
from stats import fmt, spread

from pipeline.client import consume

SCENARIOS = {
    "lr": "model lr: pre -> router -> lr -> post, the floor's path",
    "lr fused": "model lr, deployed with --fuse: [pre, router] -> [lr, post], two hops",
    None: "lr/rf/vote mix: a third each; vote fans out to lr and rf and joins",
}


def plot(scenarios: dict[str, list[dict]]) -> str | None:
    """Median latency percentiles per offered load, one line style per percentile, one colour per scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib, or the project's bench extra)")
        return None
    figure, axes = plt.subplots(figsize=(8, 5))
    for (mix, points), colour in zip(scenarios.items(), ("tab:blue", "tab:orange", "tab:green")):
        positions = range(len(points))
        for name, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            values = [point["latency_ms"][name]["median"] for point in points]
            axes.plot(positions, values, style, color=colour, label=f"{name}, {mix}")
    labels = [point["label"] for point in next(iter(scenarios.values()))]
    axes.set_xticks(list(range(len(labels))), labels, fontsize=8)
    axes.axhline(30, color="grey", linewidth=0.8)
    axes.set(xlabel="offered load", ylabel="end-to-end latency (ms), median of the runs", yscale="log")
    axes.set_title("streamserve iris graph: produce -> prediction read (grey: the 30 ms goal)", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    out = BENCH / "latency.png"
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return str(out.relative_to(ROOT))


async def _stamps(bootstrap: str, topics: list[str], ids: set[str]) -> dict[str, dict[str, list[int]]]:
    """``{topic: {request id: [Kafka timestamps]}}`` of the records of ``ids``, read until the topics go quiet."""
    stamps: dict[str, dict[str, list[int]]] = {topic: defaultdict(list) for topic in topics}
    async for topic, record in consume(bootstrap, topics, timeout_s=300, idle_s=3):
        event_id = answer_id(record)
        if event_id in ids:
            stamps[topic][event_id].append(record.timestamp_ms)
    return stamps


def agent_delays(deployment: Deployment, loads: dict[str, set[str]]) -> dict[str, dict[str, list[int]]]:
    """``{agent: {load: [ms]}}``: Kafka timestamp of an event's output minus that of its input (the last
    part, for a join): the time it spent queued, fetched, decoded, stepped and encoded at the agent, up
    to the send call of its output."""
    plan = deployment.plan
    topics = [topic for topic in plan.topics() if topic != plan.dlq]
    stamps = asyncio.run(_stamps(deployment.bootstrap, topics, set().union(*loads.values())))
    delays: dict[str, dict[str, list[int]]] = {}
    for agent in plan.agents:
        outputs = {topic for route in agent.routes.values() for topic in route} | set(agent.replies.values())
        outputs.discard(agent.input)  # a join's input is a reply topic too
        for label, ids in loads.items():
            found = delays.setdefault(agent.name, {}).setdefault(label, [])
            for event_id in ids:
                arrived = stamps[agent.input].get(event_id)
                left = [min(stamps[topic][event_id]) for topic in outputs if stamps[topic].get(event_id)]
                if arrived and left:
                    found.append(min(left) - max(arrived))
    return delays


def one_run(bootstrap: str, broker_pid: int | None, model: str | None, points: list, seconds: float, index: int):
    """One fresh deployment through every load of ``points`` (``(label, rate, count)``): results per load."""
    results: dict[str, dict[str, Any]] = {}
    fuse = bool(model and model.endswith("fused"))
    model = model.split()[0] if model else None
    with Deployment(bootstrap, "iris_graph", fuse=fuse) as deployment:
        print(f"{deployment.label}: warming up ...", flush=True)
        warm_up(deployment, iris_requests(30, seed=1))
        # Unmeasured: the first seconds of traffic through fresh topics and workers are slower than the rest.
        run_load(deployment, iris_requests(int(1000 * seconds), seed=2), rate=1000)
        ids = {}
        for label, rate, count in points:
            print(f"run {index}, {model or 'mix'}, {label}: {count:,} requests ...", flush=True)
            requests = iris_requests(count, model=model, seed=100 + index * 10 + len(ids))
            ids[label] = {request.id for request in requests}

            def ours() -> list[int]:
                return [*deployment.pids().values(), *([broker_pid] if broker_pid else []), os.getpid()]

            with Conditions(ours) as conditions:
                run = run_load(deployment, requests, rate=rate)
            results[label] = {
                "delivered_events_per_s": run.overall_rate(),
                "busy_pct": conditions.busy_pct,
                "conditions": conditions.summary(),
                **run.summary(),
            }
        print("reading every topic's timestamps for the time per agent ...", flush=True)
        delays = agent_delays(deployment, ids)
    return results, delays


def measure(bootstrap: str, broker_pid: int | None, model: str | None, args: Any) -> tuple[list[Table], list[dict]]:
    """--runs fresh deployments for requests to ``model`` (None: the mix): tables and median points."""
    points = [(f"{rate:,.0f}/s", rate, int(rate * args.seconds)) for rate in args.rate_list]
    points.append(("max", None, args.max_requests))
    runs, pooled = [], {}
    for index in range(1, args.runs + 1):
        order = points if index % 2 else list(reversed(points))
        results, delays = one_run(bootstrap, broker_pid, model, order, args.seconds, index)
        runs.append(results)
        for agent, loads in delays.items():
            for label, values in loads.items():
                pooled.setdefault(agent, {}).setdefault(label, []).extend(values)
    name = SCENARIOS.get(model) or f"model {model}"
    table = Table(
        f"iris graph, {name}: latency from produce to prediction read, median (min-max) of {args.runs} runs",
        ["rate", "requests", "sent/s", "delivered/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "answered", "CPU busy %"],
    )
    medians = []
    for label, rate, count in points:
        mine = [run[label] for run in runs]
        point = {
            "label": label,
            "rate": rate,
            "sent_events_per_s": spread(r["send_events_per_s"] for r in mine),
            "delivered_events_per_s": spread(r["delivered_events_per_s"] for r in mine),
            "latency_ms": {p: spread(r["latency_ms"][p] for r in mine) for p in ("p50", "p95", "p99", "max")},
            "busy_pct": spread(r["busy_pct"] for r in mine),
            "answered": sum(r["answered"] for r in mine),
            "sent": sum(r["sent"] for r in mine),
            "runs": mine,
        }
        medians.append(point)
        table.add(
            label,
            f"{count:,}",
            num(point["sent_events_per_s"]["median"]),
            num(point["delivered_events_per_s"]["median"]),
            *(fmt(point["latency_ms"][p], 1) for p in ("p50", "p95", "p99", "max")),
            f"{point['answered']:,}/{point['sent']:,}",
            num(point["busy_pct"]["median"]),
        )
    table.note = (
        "delivered/s: answers per second from the first produce call to the last answer read; CPU busy: "
        "the machine's cores busy during the load (workers, broker and this load generator together)\n"
        "load average (1 min, start->end) and others' CPU share per run: "
        + "; ".join(
            f"{label}: " + " | ".join(describe(run[label]["conditions"]) for run in runs) for label, _, _ in points
        )
    )
    per_agent = Table(
        f"time spent per agent (p50 / p95 ms, from Kafka timestamps, pooled over the runs), {model or 'mix'}",
        ["agent", *(label for label, _, _ in points)],
    )
    for agent, loads in pooled.items():
        cells = []
        for label, _, _ in points:
            spread_ms = percentiles(loads.get(label, []))
            cells.append(f"{num(spread_ms['p50'])} / {num(spread_ms['p95'])}" if loads.get(label) else "-")
        per_agent.add(agent, *cells)
    return [table, per_agent], medians


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--rates", default="500,1000,2000,5000", help="steady rates, events/s, comma separated")
    cli.add_argument("--seconds", type=float, help="seconds per steady rate (default 10; 2 with --quick)")
    cli.add_argument("--max-requests", type=int, help="open-loop requests (default 20,000; 3,000 with --quick)")
    cli.add_argument("--runs", type=int, help="fresh deployments per scenario (default 3; 2 with --quick)")
    cli.add_argument("--model", choices=["lr", "rf", "vote"], help="only this model (default: lr, then the mix)")
    args = cli.parse_args()
    args.seconds = args.seconds or (2 if args.quick else 10)
    args.max_requests = args.max_requests or (3_000 if args.quick else 20_000)
    args.runs = args.runs or (2 if args.quick else 3)
    args.rate_list = [float(rate) for rate in args.rates.split(",")]
    models = [args.model] if args.model else list(SCENARIOS)

    tables, scenarios = [], {}
    with kafka(args.bootstrap) as broker:
        for model in models:
            found, points = measure(broker.bootstrap, broker.pid, model, args)
            tables += found
            scenarios[model or "mix"] = points
    for table in tables:
        table.print()
    image = plot(scenarios)
    if image:
        print(f"wrote {image}")
    save("latency", args, tables, seconds_per_rate=args.seconds, runs=args.runs, scenarios=scenarios, plot=image)


if __name__ == "__main__":
    main()
