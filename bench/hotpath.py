"""Where a worker's CPU goes under load: py-spy samples of agent workers of the deployed iris graph.

The lr path (pre, models, lr, post) runs as Workers; py-spy (``pip install py-spy``) attaches to the
chosen workers (default pre and lr) while N lr requests are sent open loop, and stops when the last
answer is read. Shares are of the samples in which the worker was running Python (idle waits are left
out by py-spy): "self" is time in the function itself (C calls it makes included, e.g. msgpack, numpy),
"total" includes what it calls. Raw stacks are kept in bench/results/hotpath-<agent>.txt.

Three more tables put numbers on what the profiles show: each hop's own work per event in-process,
hand-written against streamserve's step layer (bench/hopcost.py); the CPU per record of aiokafka's
producer used record by record (``send()``) and with one batch per partition; and µs per call of the
per-event codec and protocol functions next to the bare library calls they wrap.

Run: python bench/hotpath.py [--agents pre,lr] [--requests 30000] [--rate 100] [--quick]
Prints tables and writes bench/results/hotpath.json.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    ROOT,
    Deployment,
    Table,
    create,
    fresh_name,
    iris_requests,
    kafka,
    parser,
    run_load,
    save,
    warm_up,
)
from hopcost import hop_costs

from pipeline.runtime.settings import AgentSettings

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_PREFIXES = ("site-packages/", "lib/python3.", str(ROOT) + "/")
_ENTRY = re.compile(r"\(pipeline/(cli|runner)\.py\)$")  # the process's entry frames: in every sample


def short(frame: str) -> str:
    """``function (module/file.py)``, paths cut after site-packages, the stdlib dir or the checkout."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for prefix in _PREFIXES:
        if prefix in path:
            path = path.split(prefix, 1)[1]
            path = path.split("/", 1)[1] if prefix == "lib/python3." else path
            break
    return f"{match['function']} ({path})"


def area(frame: str) -> str:
    """What a frame belongs to: streamserve (pipeline/, steps/), examples, a library, or the stdlib."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    top = path.split("/", 1)[0]
    if top in ("pipeline", "steps", "examples", "bench"):
        return f"streamserve {top}/" if top in ("pipeline", "steps") else top
    return top.removesuffix(".py") if "/" in path or path.endswith(".py") else path


def analyse(raw: Path, top: int) -> dict:
    """Self and total shares per function, and self shares per area, from py-spy's raw stacks."""
    own, total, areas = Counter(), Counter(), Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short(frame) for frame in stack.split(";")]
        samples += int(count)
        own[frames[-1]] += int(count)
        areas[area(frames[-1])] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    share = (lambda n: 100 * n / samples) if samples else (lambda n: 0.0)
    ours = [(f, n) for f, n in total.most_common() if area(f).startswith("streamserve") and not _ENTRY.search(f)]
    return {
        "samples": samples,
        "self": [(f, share(n)) for f, n in own.most_common(top)],
        "total_streamserve": [(f, share(n)) for f, n in ours[:top]],
        "self_by_area": [(a, share(n)) for a, n in areas.most_common()],
    }


def per_event_costs(repeat: int) -> Table:
    """µs per call of the per-event codec and protocol work, in-process, next to the bare library call."""
    import json
    from datetime import datetime, timezone
    from types import SimpleNamespace

    import msgpack
    from timing import best_of

    from pipeline.codec import decode_envelope, decode_request, encode_envelope, encode_response
    from pipeline.protocol import response

    request = iris_requests(1, model="lr", seed=3)[0]
    raw, headers = request.value(), {"id": request.id.encode(), **request.headers}
    record = SimpleNamespace(
        topic=f"{'x' * 30}.requests",
        partition=3,
        offset=123_456,
        timestamp=1_700_000_000_000,
        key=request.key,
        value=raw,
        headers=list(headers.items()),
    )
    event = decode_request(record)
    event.meta.update(src=(record.topic, record.partition, record.offset))
    envelope = encode_envelope(event)
    answer = {**response(event.id, "lr", [0, 2]), "species": ["setosa", "virginica"]}
    table = Table(
        f"per-event work, µs per call (request {len(raw)} bytes, step envelope {len(envelope)} bytes)",
        ["call", "µs", "the bare library call", "µs"],
    )
    pairs = [
        (
            "decode_request (pipeline/codec.py)",
            lambda: decode_request(record),
            "json.loads",
            lambda: json.loads(raw),
        ),
        (
            "json.loads(bytes)",
            lambda: json.loads(raw),
            "json.loads(bytes.decode())",
            lambda: json.loads(raw.decode()),
        ),
        (
            "encode_envelope (pipeline/codec.py)",
            lambda: encode_envelope(event),
            "msgpack.packb(body)",
            lambda: msgpack.packb(event.body),
        ),
        (
            "decode_envelope (pipeline/codec.py)",
            lambda: decode_envelope(envelope, headers),
            "msgpack.unpackb(envelope)",
            lambda: msgpack.unpackb(envelope),
        ),
        (
            "encode_response (pipeline/codec.py)",
            lambda: encode_response(answer),
            "json.dumps(body).encode()",
            lambda: json.dumps(answer).encode(),
        ),
        (
            "response (pipeline/protocol.py)",
            lambda: response(event.id, "lr", [0, 2]),
            "datetime.now(timezone.utc).isoformat()",
            lambda: datetime.now(timezone.utc).isoformat(),
        ),
        ("Event.derive (pipeline/events.py)", lambda: event.derive({}), "dict(meta)", lambda: dict(event.meta)),
    ]
    for name, call, bare, bare_call in pairs:
        table.add(name, f"{best_of(call, repeat):.2f}", bare, f"{best_of(bare_call, repeat):.2f}")
    return table


def producer_costs(bootstrap: str, records: int) -> Table:
    """CPU µs per record in aiokafka's producer: ``send()`` per record (as the agents do) against one
    ``create_batch()``/``send_batch()`` per partition, 500 records a round, acks awaited each round."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    topic, value = fresh_name("producer"), b"x" * 240
    headers = [("id", b"0" * 32), ("model", b"lr")]
    keys = [f"user-{n}".encode() for n in range(50)]
    partition_of = {key: (murmur2(key) & 0x7FFFFFFF) % 4 for key in keys}  # the default partitioner, cached
    create(bootstrap, [topic])

    async def per_record(producer: AIOKafkaProducer) -> None:
        for first in range(0, records, 500):
            sends = [
                await producer.send(topic, value, key=keys[i % 50], headers=headers) for i in range(first, first + 500)
            ]
            await asyncio.gather(*sends)

    async def per_partition(producer: AIOKafkaProducer) -> None:
        for first in range(0, records, 500):
            batches, sends = {}, []
            for i in range(first, first + 500):
                key = keys[i % 50]
                partition = partition_of[key]
                batch = batches.get(partition)
                if batch is None or batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    if batch is not None:  # full: send it, start another
                        sends.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            sends += [await producer.send_batch(batch, topic, partition=p) for p, batch in batches.items()]
            await asyncio.gather(*sends)

    async def measure() -> dict[str, float]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=AgentSettings().linger_ms)
        await producer.start()
        try:
            await (await producer.send(topic, value))  # metadata and connection first
            best = {"send() per record": float("inf"), "send_batch() per partition": float("inf")}
            for _ in range(3):
                for name, way in zip(best, (per_record, per_partition)):
                    started = time.process_time()
                    await way(producer)
                    best[name] = min(best[name], (time.process_time() - started) / records * 1e6)
            return best
        finally:
            await producer.stop()

    table = Table(f"aiokafka producer, CPU µs per record ({records:,} records, 240-byte values)", ["way", "µs"])
    for name, us in asyncio.run(measure()).items():
        table.add(name, f"{us:.1f}")
    return table


def profile(broker: str, agents: list[str], count: int, args: Any) -> tuple[list[Table], dict[str, Any]]:
    """py-spy on ``agents`` of the lr path while ``count`` lr requests go through: tables and figures."""
    raws = {agent: RESULTS / f"hotpath-{agent}.txt" for agent in agents}
    with Deployment(broker, "iris_graph", agents=["pre", "models", "lr", "post"]) as deployment:
        warm_up(deployment, iris_requests(20, model="lr", seed=1))
        pids = deployment.pids()
        command = ["py-spy", "record", "--rate", str(args.rate), "--format", "raw", "--function", "--nonblocking"]
        command += [] if args.all_threads else ["--gil"]
        spies = [
            subprocess.Popen(
                [*command, "--pid", str(pids[f"{agent}.0"]), "--output", str(raws[agent])],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for agent in agents
        ]
        print(f"profiling {', '.join(agents)} while {count:,} lr requests go through ...", flush=True)
        run = run_load(deployment, iris_requests(count, model="lr", seed=5))
        for process in spies:
            process.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
        for process in spies:
            process.wait(60)
    tables, results = [], {"steady_events_per_s": run.steady_rate(), "agents": {}}
    headings = {"self": "function (self time)", "total_streamserve": "streamserve function (with callees)"}
    for agent in agents:
        found = analyse(raws[agent], args.top) if raws[agent].is_file() else {"samples": 0}
        results["agents"][agent] = found
        if not found["samples"]:
            print(f"no samples for {agent}: is py-spy allowed to read other processes (ptrace)?")
            continue
        title = f"worker {agent}: {found['samples']:,} samples at {args.rate}/s"
        for kind in ("self", "total_streamserve", "self_by_area"):
            table = Table(f"{title}, {kind.replace('_', ' ')}", [headings.get(kind, "area"), "share %"])
            for label, share in found[kind]:
                table.add(label, f"{share:.1f}")
            tables.append(table)
    return tables, results


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--agents", default="pre,lr", help="workers to profile, comma separated, of pre,models,lr,post")
    cli.add_argument("--requests", type=int, help="open-loop lr requests (default 30,000; 8,000 with --quick)")
    cli.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    cli.add_argument("--top", type=int, default=15, help="rows per table")
    cli.add_argument("--all-threads", action="store_true", help="sample threads waiting for the GIL too")
    args = cli.parse_args()
    count = args.requests or (8_000 if args.quick else 30_000)
    tables: list[Table] = []
    results: dict[str, Any] = {"requests": count}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with kafka(args.bootstrap) as broker:
        if shutil.which("py-spy") is None:
            results["status"] = "profiles skipped: py-spy is not installed (pip install py-spy)"
            print(f"SKIPPED: {results['status']}", flush=True)
        else:
            tables, found = profile(broker.bootstrap, args.agents.split(","), count, args)
            results.update(found)
        tables.append(producer_costs(broker.bootstrap, 5_000 if args.quick else 20_000))
    hops_table, results["hops"] = hop_costs(10 if args.quick else 40)
    tables += [hops_table, per_event_costs(2_000 if args.quick else 20_000)]
    for table in tables:
        table.print()
    save("hotpath", args, tables, **results)


if __name__ == "__main__":
    main()
