"""End-to-end latency through the deployed iris graph, from the produce call to the prediction read.

All seven agents of the iris graph run as Workers. Requests are the demo's (1-3 rows): first all for
lr (pre -> router -> lr -> post, the issue's "whole graph" and the floor's path), then spread over lr,
rf and vote (vote adds a fan-out, the slower forest and a join); --model picks one. Each steady rate
runs for --seconds; "max" sends open loop (as fast as one producer goes), so its latency is mostly time
spent queued. Percentiles are over every request of a run. A second table per scenario splits the
time per agent, from the Kafka timestamps of each event's record on the agent's input and outputs.

Run: python bench/latency.py [--rates 500,1000,2000,5000] [--seconds 10] [--max-requests 20000] [--quick]
Prints a table, writes bench/results/latency.json and the plot bench/latency.png (needs matplotlib).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from common import (
    BENCH,
    ROOT,
    Deployment,
    Table,
    answer_id,
    iris_requests,
    kafka,
    machine_busy,
    num,
    parser,
    percentiles,
    run_load,
    save,
    warm_up,
)

from pipeline.client import consume


def plot(scenarios: dict[str, list[dict]]) -> str | None:
    """Latency percentiles per offered load, one line style per percentile and one colour per scenario."""
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
            values = [point["latency_ms"][name] for point in points]
            axes.plot(positions, values, style, color=colour, label=f"{name}, {mix}")
    labels = [point["label"] for point in next(iter(scenarios.values()))]
    axes.set_xticks(list(range(len(labels))), labels, fontsize=8)
    axes.axhline(30, color="grey", linewidth=0.8)
    axes.set(xlabel="offered load", ylabel="end-to-end latency (ms)", yscale="log")
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


def agent_delays(deployment: Deployment, runs: dict[str, set[str]]) -> Table:
    """Per agent and load: Kafka timestamp of its output minus that of its input (the last part, for a join).

    That is the time an event spent queued, fetched, decoded, stepped and encoded at the agent, up to the
    send call of its output; the reader's own delay is not in it.
    """
    plan = deployment.plan
    topics = [topic for topic in plan.topics() if topic != plan.dlq]
    stamps = asyncio.run(_stamps(deployment.bootstrap, topics, set().union(*runs.values())))
    table = Table("time spent per agent (p50 / p95 ms, from Kafka timestamps)", ["agent", *runs])
    for agent in plan.agents:
        outputs = {topic for route in agent.routes.values() for topic in route} | set(agent.replies.values())
        outputs.discard(agent.input)  # a join's input is a reply topic too
        cells = []
        for ids in runs.values():
            delays = []
            for event_id in ids:
                arrived = stamps[agent.input].get(event_id)
                left = [min(stamps[topic][event_id]) for topic in outputs if stamps[topic].get(event_id)]
                if arrived and left:
                    delays.append(min(left) - max(arrived))
            spread = percentiles(delays)
            cells.append(f"{num(spread['p50'])} / {num(spread['p95'])}" if delays else "-")
        table.add(agent.name, *cells)
    return table


SCENARIOS = {
    "lr": "model lr: pre -> router -> lr -> post, the floor's path",
    None: "lr/rf/vote mix: a third each; vote fans out to lr and rf and joins",
}


def measure(deployment: Deployment, model: str | None, rates: list[float], seconds: float, max_requests: int):
    """Latency at each steady rate and open loop for requests to ``model`` (None: the mix)."""
    table = Table(
        f"iris graph, {SCENARIOS.get(model) or f'model {model}'}: latency from produce to prediction read",
        ["rate", "requests", "sent/s", "delivered/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "answered", "CPU busy %"],
    )
    table.note = (
        "delivered/s: answers per second from the first produce call to the last answer read; CPU busy: "
        "the machine's cores busy during the run (workers, broker and this load generator together)"
    )
    points, ids = [], {}
    for index, rate in enumerate([*rates, None]):
        count = max_requests if rate is None else int(rate * seconds)
        label = "max" if rate is None else f"{rate:,.0f}/s"
        print(f"{model or 'mix'}, {label}: {count:,} requests ...", flush=True)
        requests = iris_requests(count, model=model, seed=100 + index)
        ids[label] = {request.id for request in requests}
        with machine_busy() as cpu:
            run = run_load(deployment, requests, rate=rate)
        latency = run.latency_ms()
        delivered = run.overall_rate()
        points.append({"label": label, "rate": rate, "delivered_events_per_s": delivered, **cpu, **run.summary()})
        table.add(
            label,
            f"{count:,}",
            num(run.send_rate()),
            num(delivered),
            *(num(latency[name], 1) for name in ("p50", "p95", "p99", "max")),
            f"{run.answered:,}/{run.sent:,}",
            num(cpu["busy_pct"]),
        )
    print("reading every topic's timestamps for the time per agent ...", flush=True)
    per_agent = agent_delays(deployment, ids)
    per_agent.title += f", {model or 'mix'}"
    return table, per_agent, points


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--rates", default="500,1000,2000,5000", help="steady rates, events/s, comma separated")
    cli.add_argument("--seconds", type=float, help="seconds per steady rate (default 10; 2 with --quick)")
    cli.add_argument("--max-requests", type=int, help="open-loop requests (default 20,000; 3,000 with --quick)")
    cli.add_argument("--model", choices=["lr", "rf", "vote"], help="only this model (default: lr, then the mix)")
    args = cli.parse_args()
    seconds = args.seconds or (2 if args.quick else 10)
    max_requests = args.max_requests or (3_000 if args.quick else 20_000)
    rates = [float(rate) for rate in args.rates.split(",")]
    models = [args.model] if args.model else list(SCENARIOS)

    tables, scenarios = [], {}
    with kafka(args.bootstrap) as broker, Deployment(broker.bootstrap, "iris_graph") as deployment:
        print(f"{deployment.label}: warming up ...", flush=True)
        warm_up(deployment, iris_requests(30, seed=1))
        # Unmeasured: the first seconds of traffic through fresh topics and workers are slower than the rest.
        run_load(deployment, iris_requests(int(1000 * seconds), seed=2), rate=1000)
        for model in models:
            table, per_agent, points = measure(deployment, model, rates, seconds, max_requests)
            tables += [table, per_agent]
            scenarios[model or "mix"] = points
    for table in tables:
        table.print()
    image = plot(scenarios)
    if image:
        print(f"wrote {image}")
    save("latency", args, tables, seconds_per_rate=seconds, scenarios=scenarios, plot=image)


if __name__ == "__main__":
    main()
