"""The floor: the iris lr path written by hand on aiokafka, one process per hop, no streamserve runtime.

source -> pre -> models -> lr -> post -> sink: each hop consumes a batch, does the least its step must
(decode, transform, encode; the lr hop runs the same scikit-learn LogisticRegression on the batch's
rows in one call), produces every output, waits for the acks and commits, with the same client and
batch settings as streamserve's agents (``AgentSettings``). Between hops a request is a msgpack map;
the sink gets JSON, as streamserve's does.

Run one hop: python bench/rawchain.py HOP --bootstrap HOST:PORT --input TOPIC --output TOPIC --group GROUP
             [--max-batch-size N] [--max-batch-time-ms N] [--linger-ms N] [--fetch-max-wait-ms N]
(``floor.py`` starts all four through :class:`RawChain`.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
from common import RESULTS, Commands, Target, create, fresh_name

from pipeline.runtime.settings import AgentSettings

HOPS = ("pre", "models", "lr", "post")
SPECIES = ("setosa", "versicolor", "virginica")


# -- the hops' work: a batch of record values in, one output value per record out ---------------


def _pre(values: list[bytes], headers: list[Any]) -> list[bytes]:
    out = []
    for value in values:
        body = json.loads(value)
        body["inputs"] = [[float(v) for v in row] for row in body["inputs"]]
        out.append(msgpack.packb(body))
    return out


def _models(values: list[bytes], headers: list[Any]) -> list[bytes]:
    for record_headers in headers:
        if dict(record_headers).get("model") != b"lr":
            raise ValueError(f"the raw chain serves model lr only, got headers {record_headers}")
    return [msgpack.packb(msgpack.unpackb(value)) for value in values]


def _lr(estimator: Any) -> Callable[[list[bytes], list[Any]], list[bytes]]:
    def hop(values: list[bytes], headers: list[Any]) -> list[bytes]:
        bodies = [msgpack.unpackb(value) for value in values]
        rows = [row for body in bodies for row in body["inputs"]]
        labels = estimator.predict(np.asarray(rows, dtype=np.float64)).tolist()
        out, start = [], 0
        for body in bodies:
            stop = start + len(body["inputs"])
            out.append(msgpack.packb({"id": body["id"], "model_name": "lr", "outputs": labels[start:stop]}))
            start = stop
        return out

    return hop


def _post(values: list[bytes], headers: list[Any]) -> list[bytes]:
    out = []
    for value in values:
        body = msgpack.unpackb(value)
        body["species"] = [SPECIES[int(label)] for label in body["outputs"]]
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def _transform(hop: str) -> Callable[[list[bytes], list[Any]], list[bytes]]:
    if hop != "lr":
        return {"pre": _pre, "models": _models, "post": _post}[hop]
    from examples.iris.iris import IrisModel

    model = IrisModel("lr", algorithm="lr")
    model.load()  # the same file the streamserve lr worker loads
    return _lr(model.model)


async def run_hop(hop: str, bootstrap: str, source: str, target: str, group: str, settings: AgentSettings) -> None:
    """Consume ``source`` -> transform -> produce to ``target`` -> commit, until SIGTERM."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    s = settings
    transform = _transform(hop)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=s.linger_ms)
    await producer.start()
    await consumer.start()
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=s.max_batch_time_ms, max_records=s.max_batch_size)
            if not batches:
                continue
            records = [record for batch in batches.values() for record in batch]
            values = transform([r.value for r in records], [r.headers for r in records])
            futures = [
                await producer.send(target, value, key=record.key, headers=list(record.headers))
                for record, value in zip(records, values)
            ]
            await asyncio.gather(*futures)
            await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in batches.items()})
    finally:
        await consumer.stop()
        await producer.stop()


# -- the chain as a benchmark target -------------------------------------------------------------


class RawChain(Target):
    """The four hop processes on fresh topics ``raw-….{requests,models,lr,post,predictions}``."""

    label = "raw aiokafka chain (pre, models, lr, post)"
    entry = "pre"
    dlq = None

    def __init__(self, bootstrap: str, **settings: int) -> None:
        """``settings``: AgentSettings fields to change for every hop (e.g. ``fetch_max_wait_ms=5``)."""
        self.bootstrap, self.name, self.settings = bootstrap, fresh_name("raw"), settings
        self.topics = [f"{self.name}.{topic}" for topic in ("requests", "models", "lr", "post", "predictions")]
        self.source, self.sink = self.topics[0], self.topics[-1]
        self.workers = Commands(self.bootstrap, self._command, RESULTS / "logs" / self.name)

    def _command(self, hop: str, instance: int) -> list[str]:
        source, target = self.topics[HOPS.index(hop)], self.topics[HOPS.index(hop) + 1]
        command = [sys.executable, __file__, hop, "--bootstrap", self.bootstrap, "--input", source]
        command += ["--output", target, "--group", f"{self.name}.{hop}"]
        return command + [f"--{name.replace('_', '-')}={value}" for name, value in self.settings.items()]

    def __enter__(self) -> RawChain:
        create(self.bootstrap, self.topics)
        for hop in HOPS:
            self.workers.start(hop)
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hop", choices=HOPS)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    defaults = AgentSettings()
    for name in ("max_batch_size", "max_batch_time_ms", "linger_ms", "fetch_max_wait_ms"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    args = parser.parse_args()
    settings = dataclasses.replace(
        defaults,
        max_batch_size=args.max_batch_size,
        max_batch_time_ms=args.max_batch_time_ms,
        linger_ms=args.linger_ms,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
    )
    asyncio.run(run_hop(args.hop, args.bootstrap, args.input, args.output, args.group, settings))


if __name__ == "__main__":
    main()
