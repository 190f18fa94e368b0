"""The ``streamserve`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from pipeline.cli_options import GRAPH_HELP, bootstrap_of, broker_option, kafka_config, port, require_bootstrap
from pipeline.cli_topics import register_topic_commands
from pipeline.errors import StreamServeError
from pipeline.logs import configure as configure_logging

logger = logging.getLogger("streamserve")
METRICS_PORT_ENV = "STREAMSERVE_METRICS_PORT"
WORKER_METRICS_BASE_ENV = "STREAMSERVE_WORKER_METRICS_BASE"  # set by `run --workers`: worker i serves on base + i


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

    if args.tools is not None:
        from pipeline.kafka_dist import KAFKA_VERSION, kafka_tools

        folder = kafka_tools(bin_dir=args.tools or None)
        print(folder)
        tools = sorted(path.name for path in folder.glob("*.sh"))
        print(
            f"Kafka {KAFKA_VERSION}'s console tools ({', '.join(tools)}); to use them by name:\n"
            f'  export PATH="{folder}:$PATH"',
            file=sys.stderr,
        )
        return 0
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

    bootstrap = require_bootstrap(args)
    result = ensure_topics(bootstrap, build_plan(load_graph(args.graph)), args.config, kafka_config=kafka_config(args))
    for name, state in result.items():
        print(f"{state:8} {name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.loading import load_graph
    from pipeline.plan import build_plan
    from pipeline.runner import run_agents, select_agents
    from pipeline.runtime.settings import AgentSettings, default_instance
    from pipeline.supervisor import run_in_foreground
    from pipeline.topics import ensure_topics

    graph = load_graph(args.graph)
    plan = build_plan(graph, fuse=args.fuse)
    names = select_agents(plan, args.step)
    config, metrics_port = kafka_config(args), _metrics_port(args)
    with contextlib.ExitStack() as stack:
        bootstrap = bootstrap_of(args)
        if bootstrap is None:
            from pipeline.broker import EmbeddedKafka

            if config.security_protocol != "PLAINTEXT":
                raise StreamServeError(
                    f"the embedded broker is plaintext, but the Kafka client config says {config.describe()}: "
                    "pass --bootstrap for the cluster it describes"
                )
            from pipeline.lifecycle import stop_signals

            with stop_signals():  # a stop while the broker starts leaves no JVM and no temp dir
                bootstrap = stack.enter_context(EmbeddedKafka(port=args.port)).bootstrap
                logger.info("started the embedded Apache Kafka broker at %s", bootstrap)
                ensure_topics(bootstrap, build_plan(graph), args.config)  # every topic, fused or not
            print(f"embedded Kafka at {bootstrap}; produce requests to {plan.source}", flush=True)
        elif args.port is not None:
            raise StreamServeError("--port sets the embedded broker's port: leave it out with --bootstrap")
        if args.workers > 1:
            if metrics_port is not None:
                os.environ[WORKER_METRICS_BASE_ENV] = str(metrics_port)
            options = ["--max-batch-size", str(args.max_batch_size), "--max-batch-time-ms", str(args.max_batch_time_ms)]
            options += ["--fuse"] if args.fuse else []
            return run_in_foreground(args.graph, bootstrap, args.step, args.workers, options)
        settings = AgentSettings(
            instance=args.instance or default_instance(),
            max_batch_size=args.max_batch_size,
            max_batch_time_ms=args.max_batch_time_ms,
        )
        asyncio.run(run_agents(plan, bootstrap, names, settings, kafka_config=config, metrics_port=metrics_port))
    return 0


def _metrics_port(args: argparse.Namespace) -> int | None:
    """--metrics-port, else worker i's port under `run --workers` (base + i), else $STREAMSERVE_METRICS_PORT."""
    if args.metrics_port is not None:
        return int(args.metrics_port)
    base = os.environ.get(WORKER_METRICS_BASE_ENV)
    if base and args.instance and args.instance.isdigit():
        return int(base) + int(args.instance)
    port = os.environ.get(METRICS_PORT_ENV)
    if port and not port.isdigit():
        raise StreamServeError(f"${METRICS_PORT_ENV} must be a port number, got {port!r}")
    return int(port) if port else None


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    bootstrap, config = bootstrap_of(args), kafka_config(args)
    if bootstrap is None and config.security_protocol != "PLAINTEXT":
        raise StreamServeError("the demo's embedded broker is plaintext: pass --bootstrap with --kafka-config")
    from pipeline.lifecycle import stop_signals

    with stop_signals():  # a stop at any point stops the workers and the broker, and removes their files
        summary = run_demo(bootstrap, count=args.requests, rate=args.rate)
    ok = summary.missing == 0 and summary.mismatches == 0
    print("demo OK: every request was answered or dead-lettered" if ok else "demo FAILED: see above")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamserve", description="ML serving graphs over Kafka")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    graph = add("graph", cmd_graph, "print a graph's agents, routes and topics, as text and Mermaid")
    graph.add_argument("graph", help=GRAPH_HELP)

    broker = add("broker", cmd_broker, "run the embedded broker in the foreground")
    broker.add_argument("--port", type=port, help="client port (default: a free one)")
    broker.add_argument("--data-dir", help="keep the broker's data here across restarts (default: a temp dir)")
    broker.add_argument(
        "--kind",
        choices=["kafka", "tansu"],
        default="kafka",
        help="tansu: no Java needed, memory only, not for sustained traffic (default: %(default)s)",
    )
    broker.add_argument("--fetch", action="store_true", help="only resolve and cache the Kafka jars")
    broker.add_argument(
        "--tools",
        nargs="?",
        const="",
        metavar="DIR",
        help="write Kafka's console tools (kafka-topics.sh, kafka-consumer-groups.sh, ...) into DIR "
        "(default: the jar cache's bin/) and print its path",
    )

    topics = add("topics", cmd_topics, "create a graph's topics (idempotent)")
    topics.add_argument("action", choices=["create"], help="create: the missing topics, checking partitions")
    topics.add_argument("graph", help=GRAPH_HELP)
    topics.add_argument("--config", help="topics.yaml with partitions, replication, retention")
    broker_option(topics)

    run = add("run", cmd_run, "run a graph's step agents (all, or --step ones)")
    run.add_argument("graph", help=GRAPH_HELP)
    run.add_argument("--step", action="append", help="run only this agent (repeatable)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (one consumer group member each)")
    run.add_argument(
        "--fuse",
        action="store_true",
        help="run each cheap stateless step inside the agents that feed it (one Kafka hop fewer each); "
        "every worker of a deployment must agree",
    )
    run.add_argument(
        "--instance",
        help="this worker's identity among the step's replicas (default: $STREAMSERVE_INSTANCE, else host.pid)",
    )
    run.add_argument("--config", help="topics.yaml used when starting the embedded broker")
    run.add_argument("--port", type=port, help="the embedded broker's client port (default: a free one)")
    run.add_argument(
        "--metrics-port",
        type=port,
        help="serve /metrics, /healthz and /readyz on this port (with --workers N: port + worker index; "
        "default: $STREAMSERVE_METRICS_PORT, else none)",
    )
    run.add_argument("--max-batch-size", type=int, default=500, help="records per batch at most (default: %(default)s)")
    run.add_argument(
        "--max-batch-time-ms", type=int, default=100, help="poll wait when idle, in ms (default: %(default)s)"
    )
    broker_option(run)

    register_topic_commands(add, broker_option)

    demo = add("demo", cmd_demo, "deploy the iris graph on the embedded broker and send it requests")
    demo.add_argument("--requests", type=int, default=1000, help="how many requests (default: %(default)s)")
    demo.add_argument("--rate", type=float, help="requests per second (default: as fast as possible)")
    broker_option(demo)
    from pipeline.generate import register as register_generators

    register_generators(commands)
    from pipeline.models_cli import register as register_models

    register_models(commands)
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
