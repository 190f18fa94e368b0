"""Soak: the iris graph at a fixed rate for minutes; memory must stay flat, nothing lost.

Prints, per minute, requests sent, answers, dead letters and p50/p99 latency, then each
worker's RSS at the start and the end. Events in must equal events out + dead letters.

Run: python bench/soak.py [--minutes 10] [--rate 300] [--quick]
Prints tables and writes bench/results/soak.json.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from common import Deployment, Table, iris_requests, kafka, num, parser, percentiles, save, warm_up
from cpu import memory_mib

from pipeline.client import consume, produce


async def soak(deployment: Deployment, minutes: float, rate: float) -> dict:
    """Send at ``rate`` for ``minutes``; latencies and counts bucketed by the minute of sending."""
    count = int(minutes * 60 * rate)
    requests = iris_requests(count, seed=3)
    sent_at: dict[str, float] = {}
    latencies: dict[int, list[float]] = defaultdict(list)
    dead: dict[int, int] = defaultdict(int)
    start = time.perf_counter()
    done = asyncio.Event()

    async def read() -> None:
        seen: set[str] = set()
        topics = [deployment.sink, deployment.dlq]
        async for topic, record in consume(
            deployment.bootstrap, topics, timeout_s=minutes * 60 + 120, until=done.is_set
        ):
            event_id = record.event_id
            if event_id not in sent_at or event_id in seen:
                continue
            seen.add(event_id)
            minute = int((sent_at[event_id] - start) // 60)
            if topic == deployment.dlq:
                dead[minute] += 1
            else:
                latencies[minute].append(record.received_s - sent_at[event_id])
            if len(seen) == count:
                done.set()

    reader = asyncio.create_task(read())
    await produce(
        deployment.bootstrap,
        deployment.source,
        requests,
        rate=rate,
        on_sent=lambda request, at: sent_at.__setitem__(request.id, at),
    )
    try:
        await asyncio.wait_for(asyncio.shield(done.wait()), 120)
    except asyncio.TimeoutError:
        done.set()
    await reader
    sent = defaultdict(int)
    for at in sent_at.values():
        sent[int((at - start) // 60)] += 1
    return {"sent": dict(sent), "latencies": dict(latencies), "dead": dict(dead)}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--minutes", type=float, help="how long to send (default 10; 1 with --quick)")
    cli.add_argument("--rate", type=float, default=300, help="requests per second")
    args = cli.parse_args()
    minutes = args.minutes or (1 if args.quick else 10)
    with kafka(args.bootstrap) as broker, Deployment(broker.bootstrap, "iris_graph") as deployment:
        warm_up(deployment, iris_requests(30, seed=1))
        pids = deployment.pids()
        rss_start = {name: memory_mib(pid)["rss"] for name, pid in pids.items()}
        result = asyncio.run(soak(deployment, minutes, args.rate))
        rss_end = {name: memory_mib(pid)["rss"] for name, pid in pids.items()}

    per_minute = Table(
        f"soak: iris graph at {args.rate:,.0f} requests/s for {minutes:g} min",
        ["minute", "sent", "answered", "dead letters", "lost", "p50 ms", "p99 ms"],
    )
    totals = defaultdict(int)
    for minute in sorted(result["sent"]):
        answered, dead = len(result["latencies"].get(minute, [])), result["dead"].get(minute, 0)
        sent = result["sent"][minute]
        ms = {k: v * 1000 for k, v in percentiles(result["latencies"].get(minute, [])).items()}
        per_minute.add(minute + 1, sent, answered, dead, sent - answered - dead, num(ms["p50"], 1), num(ms["p99"], 1))
        for name, value in (("sent", sent), ("answered", answered), ("dead", dead)):
            totals[name] += value
    per_minute.note = (
        f"events in {totals['sent']:,} = out {totals['answered']:,} + dead letters "
        f"{totals['dead']:,} + lost {totals['sent'] - totals['answered'] - totals['dead']:,}"
    )
    memory = Table("worker memory over the soak", ["worker", "RSS start MiB", "RSS end MiB", "growth %"])
    for name in pids:
        growth = (rss_end[name] / rss_start[name] - 1) * 100
        memory.add(name, num(rss_start[name], 1), num(rss_end[name], 1), num(growth, 1))
    per_minute.print()
    memory.print()
    save(
        "soak",
        args,
        [per_minute, memory],
        minutes=minutes,
        rate=args.rate,
        totals=dict(totals),
        rss_start_mib=rss_start,
        rss_end_mib=rss_end,
    )


if __name__ == "__main__":
    main()
