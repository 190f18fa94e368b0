"""The ``streamserve`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from pipeline.errors import StreamServeError
from pipeline.logs import configure as configure_logging

logger = logging.getLogger("streamserve")


def _bootstrap(args: argparse.Namespace) -> str | None:
    return args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")


def cmd_graph(args: argparse.Namespace) -> int:
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan
    from pipeline.render import plan_mermaid, plan_text

    plan = build_plan(load_graph(args.graph))
    print(plan_text(plan))
    print("\n```mermaid\n" + plan_mermaid(plan) + "\n```")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from pipeline.broker import kafka_classpath, start_broker
    from pipeline.errors import BrokerError
    from pipeline.lifecycle import StopRequested, stop_signals

    if args.fetch:
        jars = kafka_classpath()
        print(f"Kafka jars ready: {len(jars)} files in {jars[0].parent}")
        return 0
    try:
        with stop_signals():  # SIGTERM, SIGHUP, SIGINT: stop the broker, even while it starts
            broker = start_broker(args.kind, port=args.port, data_dir=args.data_dir)
            try:
                print(f"{args.kind} broker listening on {broker.bootstrap} (Ctrl-C stops it)", flush=True)
                code = broker.wait()
                tail = broker.log_tail()
            finally:
                broker.stop()
    except StopRequested as stop:
        logger.info("%s: stopped the %s broker", stop.name, args.kind)
        return 0
    raise BrokerError(f"the {args.kind} broker exited on its own with code {code}; the end of its log:\n{tail}")


def cmd_topics(args: argparse.Namespace) -> int:
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan
    from pipeline.topics import ensure_topics

    bootstrap = _require_bootstrap(args)
    result = ensure_topics(bootstrap, build_plan(load_graph(args.graph)), args.config)
    for name, state in result.items():
        print(f"{state:8} {name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan
    from pipeline.runner import run_agents, run_workers, select_agents
    from pipeline.runtime.settings import AgentSettings, default_instance
    from pipeline.topics import ensure_topics

    plan = build_plan(load_graph(args.graph))
    names = select_agents(plan, args.step)
    with contextlib.ExitStack() as stack:
        bootstrap = _bootstrap(args)
        if bootstrap is None:
            from pipeline.broker import EmbeddedKafka

            bootstrap = stack.enter_context(EmbeddedKafka()).bootstrap
            logger.info("started the embedded Apache Kafka broker at %s", bootstrap)
            ensure_topics(bootstrap, plan, args.config)
            print(f"embedded Kafka at {bootstrap}; produce requests to {plan.source}", flush=True)
        if args.workers > 1:
            return run_workers(args.graph, bootstrap, args.step, args.workers)
        settings = AgentSettings(
            instance=args.instance or default_instance(),
            max_batch_size=args.max_batch_size,
            max_batch_time_ms=args.max_batch_time_ms,
        )
        asyncio.run(run_agents(plan, bootstrap, names, settings))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.client import Request, produce

    topic = _topic(args, "source")
    lines = (line for line in (open(args.file) if args.file else sys.stdin) if line.strip())
    requests = (_request(line, args.model) for line in lines)
    count = 0

    def progress(request: Request, _: float) -> None:
        nonlocal count
        count += 1
        if count % 1000 == 0:
            print(f"\rproduced {count}", end="", file=sys.stderr, flush=True)

    sent = asyncio.run(produce(_require_bootstrap(args), topic, requests, rate=args.rate, on_sent=progress))
    print(f"\rproduced {sent} requests to {topic}", file=sys.stderr)
    return 0


def _request(line: str, model: str | None):
    from pipeline.client import Request

    body = json.loads(line)
    if not isinstance(body, dict):
        raise StreamServeError(f"each line must be a JSON object (a V2 request), got: {line.strip()[:80]}")
    return Request(body, headers={"model": model.encode()} if model else {})


def cmd_consume(args: argparse.Namespace) -> int:
    from pipeline.client import consume

    topic = _topic(args, "dlq" if args.dlq else "sink")

    async def tail() -> None:
        count = 0
        async for _, record in consume(_require_bootstrap(args), [topic], timeout_s=args.timeout):
            line: dict = {"body": record.body} if record.body is not None else {"raw": repr(record.value[:200])}
            line["headers"] = {k: None if v is None else v.decode(errors="replace") for k, v in record.headers.items()}
            print(json.dumps(line, default=str), flush=True)
            count += 1
            if args.limit and count >= args.limit:
                return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan
    from pipeline.replay import replay

    plan = build_plan(load_graph(args.graph))
    summary = asyncio.run(
        replay(
            _require_bootstrap(args),
            plan,
            step=args.step,
            error_type=args.error_type,
            limit=args.limit,
            group=args.group,
        )
    )
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(summary.by_error.items())) or "none"
    print(f"replayed {summary.replayed} of {summary.read} dead letters to {plan.source} ({kinds})")
    if summary.unreadable:
        print(f"{summary.unreadable} could not be replayed: the Kafka client could not read the original record")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    summary = run_demo(_bootstrap(args), count=args.requests, rate=args.rate)
    ok = summary.missing == 0 and summary.mismatches == 0
    print("demo OK: every request was answered or dead-lettered" if ok else "demo FAILED: see above")
    return 0 if ok else 1


def _topic(args: argparse.Namespace, which: str) -> str:
    if args.topic:
        return args.topic
    if not args.graph:
        raise StreamServeError("give a graph (FILE:GRAPH) or --topic")
    from pipeline.loading import load_graph

    graph = load_graph(args.graph)
    return {"source": graph.source, "sink": graph.sink, "dlq": graph.dlq}[which]


def _require_bootstrap(args: argparse.Namespace) -> str:
    bootstrap = _bootstrap(args)
    if bootstrap is None:
        raise StreamServeError("no broker: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS")
    return bootstrap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamserve", description="ML serving graphs over Kafka")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def broker_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")

    graph = add("graph", cmd_graph, "print a graph's agents, routes and topics, as text and Mermaid")
    graph.add_argument("graph", help="FILE.py:NAME or module:NAME")

    broker = add("broker", cmd_broker, "run the embedded broker in the foreground")
    broker.add_argument("--port", type=int)
    broker.add_argument("--data-dir")
    broker.add_argument(
        "--kind",
        choices=["kafka", "tansu"],
        default="kafka",
        help="tansu: no Java needed, memory only, not for sustained traffic",
    )
    broker.add_argument("--fetch", action="store_true", help="only resolve and cache the Kafka jars")

    topics = add("topics", cmd_topics, "create a graph's topics (idempotent)")
    topics.add_argument("action", choices=["create"])
    topics.add_argument("graph")
    topics.add_argument("--config", help="topics.yaml with partitions, replication, retention")
    broker_option(topics)

    run = add("run", cmd_run, "run a graph's step agents (all, or --step ones)")
    run.add_argument("graph")
    run.add_argument("--step", action="append", help="run only this agent (repeatable)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (one consumer group member each)")
    run.add_argument(
        "--instance",
        help="this worker's identity among the step's replicas (default: $STREAMSERVE_INSTANCE, else host.pid)",
    )
    run.add_argument("--config", help="topics.yaml used when starting the embedded broker")
    run.add_argument("--max-batch-size", type=int, default=500)
    run.add_argument("--max-batch-time-ms", type=int, default=100, help="poll wait when idle")
    broker_option(run)

    produce = add("produce", cmd_produce, "send JSON-lines requests to a graph's input topic")
    produce.add_argument("graph", nargs="?")
    produce.add_argument("--topic")
    produce.add_argument("--file", help="JSON lines (default: stdin)")
    produce.add_argument("--model", help="set the 'model' header on every request")
    produce.add_argument("--rate", type=float, help="requests per second (default: as fast as possible)")
    broker_option(produce)

    consume = add("consume", cmd_consume, "print a graph's predictions (or --dlq dead letters) as JSON lines")
    consume.add_argument("graph", nargs="?")
    consume.add_argument("--topic")
    consume.add_argument("--dlq", action="store_true")
    consume.add_argument("--limit", type=int)
    consume.add_argument("--timeout", type=float, default=3600)
    broker_option(consume)

    replay = add("replay", cmd_replay, "re-produce dead letters to the graph's input topic, as they first entered")
    replay.add_argument("graph", help="FILE.py:NAME or module:NAME")
    replay.add_argument("--step", help="only letters of requests that failed at this step")
    replay.add_argument("--error-type", help="only letters with this error type (e.g. RoutingError)")
    replay.add_argument("--limit", type=int, help="replay at most this many")
    replay.add_argument(
        "--group", help="remember where this replay stopped under this consumer group (default: read every letter)"
    )
    broker_option(replay)

    demo = add("demo", cmd_demo, "deploy the iris graph on the embedded broker and send it requests")
    demo.add_argument("--requests", type=int, default=1000)
    demo.add_argument("--rate", type=float)
    broker_option(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its errors as one line (exit 2), a stop without a traceback (128 + signal)."""
    import signal

    from pipeline.lifecycle import StopRequested

    try:
        args = build_parser().parse_args(argv)
        configure_logging(args.verbose)
        return args.handler(args)
    except StreamServeError as exc:
        print(f"streamserve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except StopRequested as stop:
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
