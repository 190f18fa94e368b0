"""CPU per event of each lr-path hop's own work, in-process, before any Kafka client work.

The same batch of iris lr requests goes hop by hop through (a) the hand-written hops' work
(bench/hops.py: what both floor chains run) and (b) streamserve's step layer as its agents run
it: every record decoded by the wire, the agent's step on the batch, each outcome routed and
encoded into the record it sends. Each hop is timed on the previous hop's outputs, the fastest
of ``repeat`` batches. The difference is what streamserve's envelope, identity, routing
and per-event error isolation cost per event; the rest of a worker's CPU is the Kafka client's,
the event loop's and the delivery loop's, which both sides pay per record and per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from common import Table, iris_requests
from hops import HOPS, transform
from timing import best_of

BATCH = 500  # AgentSettings.max_batch_size: a draining agent's batch


def _streamserve_hops(plan: Any) -> list[Callable[[list[Any]], list[Any]]]:
    """Per hop of ``plan``'s lr path: records in -> the records the agent would send."""
    from pipeline.plan import route
    from pipeline.runtime.memory import MemoryRecord
    from pipeline.runtime.wire import BytesWire

    wire = BytesWire(plan.source, plan.sink, plan.id_keyed_topics)
    agents = {agent.name: agent for agent in plan.agents}

    def hop(name: str) -> Callable[[list[Any]], list[Any]]:
        agent = agents[name]
        agent.step.setup()

        def run(records: list[Any]) -> list[Any]:
            events = [wire.decode(record) for record in records]
            for event, record in zip(events, records):
                event.src = (record.topic, record.partition, record.offset)
            sent = [
                wire.encode(topic, event)
                for outcome in agent.step.process(events)
                for topic, event in route(agent, outcome)
            ]
            return [MemoryRecord(o.topic, 0, n, 0, o.key, o.value, tuple(o.headers)) for n, o in enumerate(sent)]

        return run

    return [hop(name) for name in HOPS]


def hop_costs(repeat: int = 40) -> tuple[Table, dict[str, dict[str, float]]]:
    """The table, and per hop the µs per event of both sides."""
    from examples.iris.iris import build
    from pipeline.plan import build_plan
    from pipeline.runtime.memory import MemoryRecord

    plan = build_plan(build())
    records: list[Any] = [
        MemoryRecord(plan.source, 0, number, 0, request.key, request.value(), tuple(request.headers.items()))
        for number, request in enumerate(iris_requests(BATCH, model="lr", seed=5))
    ]
    values, headers = [r.value for r in records], [list(r.headers) for r in records]
    figures: dict[str, dict[str, float]] = {}
    for name, ours in zip(HOPS, _streamserve_hops(plan)):
        work = transform(name)
        figures[name] = {
            "hand-written": best_of(partial(work, values, headers), 1, rounds=repeat) / BATCH,
            "streamserve": best_of(partial(ours, records), 1, rounds=repeat) / BATCH,
        }
        values, records = work(values, headers), ours(records)
    total = {side: sum(hop[side] for hop in figures.values()) for side in ("hand-written", "streamserve")}
    table = Table(
        f"each hop's own work, in-process: µs per event (a {BATCH}-request batch, best of {repeat})",
        ["hop", "hand-written (bench/hops.py)", "streamserve (decode, step, route, encode)", "difference"],
    )
    for name, hop in [*figures.items(), ("all four", total)]:
        table.add(
            name,
            f"{hop['hand-written']:.1f}",
            f"{hop['streamserve']:.1f}",
            f"{hop['streamserve'] - hop['hand-written']:.1f}",
        )
    return table, {**figures, "all four": total}
