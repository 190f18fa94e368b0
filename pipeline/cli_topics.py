"""``streamserve`` commands that read and write a graph's topics: produce, consume, inspect, replay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable

from pipeline.cli_options import GRAPH_HELP, header, kafka_config, require_bootstrap, topic_of
from pipeline.errors import StreamServeError


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.client import Request, produce
    from pipeline.lines import read_requests

    topic = topic_of(args, "source")
    try:
        source = open(args.file, encoding="utf-8") if args.file else sys.stdin
    except OSError as exc:
        raise StreamServeError(f"cannot read {args.file!r}: {exc.strerror}") from None
    with source:
        try:
            requests = read_requests(
                source,
                model=args.model,
                key=args.key,
                key_field=args.key_field,
                headers=dict(args.header or ()),
                fmt=args.format,
            )
        except UnicodeDecodeError as exc:
            raise StreamServeError(f"the input is not UTF-8 text: {exc}") from None
    count = 0

    def progress(request: Request, _: float) -> None:
        nonlocal count
        count += 1
        if count % 1000 == 0:
            print(f"\rproduced {count}", end="", file=sys.stderr, flush=True)

    bootstrap, config = require_bootstrap(args), kafka_config(args)
    sent = asyncio.run(produce(bootstrap, topic, requests, rate=args.rate, on_sent=progress, kafka_config=config))
    print(f"\rproduced {sent} requests to {topic}", file=sys.stderr)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from pipeline.client import read_topics
    from pipeline.lines import record_json, record_text

    topic = topic_of(args, "dlq" if args.dlq else "sink")
    show = record_text if args.format == "text" else record_json
    bootstrap, config = require_bootstrap(args), kafka_config(args)
    count = 0

    async def tail() -> None:
        nonlocal count
        records = read_topics(
            bootstrap,
            [topic],
            start="end" if args.from_end else "beginning",
            follow=args.follow,
            timeout_s=args.timeout,
            kafka_config=config,
        )
        async with contextlib.aclosing(records):
            async for record in records:
                print(show(record), flush=True)
                count += 1
                if args.limit and count >= args.limit:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail())
    print(f"read {count} records from {topic}", file=sys.stderr)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.journey import as_json, render, trace_request
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan

    plan = build_plan(load_graph(args.graph))
    journeys = asyncio.run(trace_request(require_bootstrap(args), plan, args.id, kafka_config=kafka_config(args)))
    print(as_json(journeys) if args.format == "json" else render(journeys, args.id))
    return 0 if journeys else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan
    from pipeline.replay import replay

    plan = build_plan(load_graph(args.graph))
    summary = asyncio.run(
        replay(
            require_bootstrap(args),
            plan,
            step=args.step,
            error_type=args.error_type,
            limit=args.limit,
            group=args.group,
            kafka_config=kafka_config(args),
        )
    )
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(summary.by_error.items())) or "none"
    print(f"replayed {summary.replayed} of {summary.read} dead letters to {plan.source} ({kinds})")
    if summary.unreadable:
        print(
            f"{summary.unreadable} could not be replayed: the letter has no value (the Kafka client could not "
            "read the original record, or it was dropped as too large: see the value_dropped header)"
        )
    if summary.unknown_origin:
        print(
            f"{summary.unknown_origin} could not be replayed: the record between steps could not be decoded, "
            "so the request it came from is unknown (partition -1)"
        )
    return 0


def register_topic_commands(
    add: Callable[..., argparse.ArgumentParser], broker_option: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add produce, consume, inspect and replay to the command line."""
    produce = add("produce", cmd_produce, "send JSON-lines requests to a graph's input topic (all checked first)")
    produce.add_argument("graph", nargs="?", help=GRAPH_HELP + " (or --topic)")
    produce.add_argument("--topic", help="the topic to send to (default: the graph's input topic)")
    produce.add_argument("--file", help="JSON lines, one V2 request each (default: stdin)")
    produce.add_argument("--model", help="set the 'model' header on every request")
    keys = produce.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the Kafka key of every request (ordering per key)")
    keys.add_argument("--key-field", metavar="FIELD", help="key each request by the text of this field of its body")
    produce.add_argument(
        "--header", action="append", type=header, metavar="K=V", help="a Kafka header on every request (repeatable)"
    )
    produce.add_argument(
        "--format", choices=["json", "msgpack"], default="json", help="encoding of the sent values (default: json)"
    )
    produce.add_argument("--rate", type=float, help="requests per second (default: as fast as possible)")
    broker_option(produce)

    consume = add("consume", cmd_consume, "print a graph's predictions (or --dlq dead letters) as JSON lines")
    consume.add_argument("graph", nargs="?", help=GRAPH_HELP + " (or --topic)")
    consume.add_argument("--topic", help="the topic to read (default: the graph's output topic)")
    consume.add_argument("--dlq", action="store_true", help="read the graph's dead-letter topic")
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at each partition's beginning (default)")
    start.add_argument("--from-end", action="store_true", help="start at each partition's end: only new records")
    consume.add_argument("--follow", action="store_true", help="keep waiting for records (default: stop at the end)")
    consume.add_argument("--limit", type=int, help="stop after this many records")
    consume.add_argument("--timeout", type=float, help="stop after this many seconds (default: no limit)")
    consume.add_argument(
        "--format",
        choices=["json", "text"],
        default="json",
        help="json: one object per record with topic, partition, offset, timestamp, key, headers and body "
        "(like kcat -J); text: one line for people (default: json)",
    )
    broker_option(consume)

    inspect = add("inspect", cmd_inspect, "show where one request went: each hop, its answer or dead letter")
    inspect.add_argument("graph", help=GRAPH_HELP)
    inspect.add_argument("id", help="the request's id (its body 'id' or 'id' header)")
    inspect.add_argument("--format", choices=["text", "json"], default="text", help="output (default: text)")
    broker_option(inspect)

    replay = add("replay", cmd_replay, "re-produce dead letters to the graph's input topic, as they first entered")
    replay.add_argument("graph", help=GRAPH_HELP)
    replay.add_argument("--step", help="only letters of requests that failed at this step")
    replay.add_argument("--error-type", help="only letters with this error type (e.g. RoutingError)")
    replay.add_argument("--limit", type=int, help="replay at most this many")
    replay.add_argument(
        "--group", help="remember where this replay stopped under this consumer group (default: read every letter)"
    )
    broker_option(replay)
