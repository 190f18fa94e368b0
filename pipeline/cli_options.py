"""What several ``streamserve`` commands share: the broker and Kafka client options and how
their values are read."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.errors import StreamServeError
from pipeline.kafka_config import ENV as KAFKA_CONFIG_ENV
from pipeline.kafka_config import KafkaConfig, load_kafka_config, resolve

GRAPH_HELP = "FILE.py:NAME or module:NAME of the graph"


def broker_option(sub: argparse.ArgumentParser) -> None:
    """Add --bootstrap and --kafka-config to ``sub``."""
    sub.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else bootstrap.servers of the config)",
    )
    sub.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="Kafka client properties: security.protocol, sasl.*, ssl.* (default: $STREAMSERVE_KAFKA_CONFIG)",
    )


def kafka_config(args: argparse.Namespace) -> KafkaConfig:
    """This command's Kafka client config: --kafka-config, else $STREAMSERVE_KAFKA_CONFIG, else
    plaintext. A given file is exported to $STREAMSERVE_KAFKA_CONFIG, so the workers this
    command starts connect the same way."""
    path = getattr(args, "kafka_config", None)
    if not path:
        return resolve(None)
    config = load_kafka_config(path)
    os.environ[KAFKA_CONFIG_ENV] = str(Path(path).resolve())
    return config


def bootstrap_of(args: argparse.Namespace) -> str | None:
    return args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or kafka_config(args).bootstrap_servers


def topic_of(args: argparse.Namespace, which: str) -> str:
    if args.topic:
        return args.topic
    if not args.graph:
        raise StreamServeError("give a graph (FILE:GRAPH) or --topic")
    from pipeline.loading import load_graph

    graph = load_graph(args.graph)
    return {"source": graph.source, "sink": graph.sink, "dlq": graph.dlq}[which]


def require_bootstrap(args: argparse.Namespace) -> str:
    bootstrap = bootstrap_of(args)
    if bootstrap is None:
        raise StreamServeError(
            "no broker: pass --bootstrap HOST:PORT, set KAFKA_BOOTSTRAP_SERVERS, or bootstrap.servers in --kafka-config"
        )
    return bootstrap


def header(text: str) -> tuple[str, str]:
    from pipeline.lines import parse_header

    try:
        return parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0-65535), got {text!r}")
    return int(text)
