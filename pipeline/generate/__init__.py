"""Deployment files for a graph: ``streamserve compose`` (a compose file) and ``streamserve k8s``
(Kubernetes manifests with KEDA scaling). ``register`` adds both commands to the CLI."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``compose`` and ``k8s`` subcommands to the CLI's ``commands``."""
    from pipeline.generate.options import ComposeOptions, K8sOptions

    c, k = ComposeOptions(), K8sOptions()
    text = "write a compose file: Apache Kafka, a topics job and one service per agent of a graph"
    compose = commands.add_parser("compose", help=text, description=text)
    compose.set_defaults(handler=_compose)
    _graph_options(compose)
    compose.add_argument(
        "-o", "--output", default="docker-compose.yml", help="file to write, '-' for stdout (default: %(default)s)"
    )
    compose.add_argument("--image", default=c.image, help="image every step runs (default: %(default)s)")
    compose.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="no build sections: the image is pulled, not built from ./Dockerfile",
    )
    compose.add_argument(
        "--kafka-config",
        help="a Kafka client properties file on the host, mounted into every service (a secured cluster)",
    )
    compose.add_argument(
        "--metrics-port",
        type=int,
        help="workers serve /healthz on this port: pass it to them and health-check it (default: no check)",
    )

    text = "write Kubernetes manifests: a Deployment and a KEDA ScaledObject per agent, a topics Job"
    k8s = commands.add_parser("k8s", help=text, description=text)
    k8s.set_defaults(handler=_k8s)
    _graph_options(k8s)
    k8s.add_argument("-o", "--output", default="k8s", help="folder to write the files to (default: %(default)s)")
    k8s.add_argument("--image", default=k.image, help="worker image, pullable by the cluster (default: %(default)s)")
    k8s.add_argument("--bootstrap", default=k.bootstrap, help="Kafka bootstrap servers (default: %(default)s)")
    k8s.add_argument(
        "--lag-threshold",
        type=int,
        default=k.lag_threshold,
        help="KEDA adds a replica per this many records of consumer lag (default: %(default)s)",
    )
    k8s.add_argument(
        "--min-replicas", type=int, default=k.min_replicas, help="fewest replicas per agent (default: %(default)s)"
    )
    k8s.add_argument("--cpu", default=k.cpu_request, help="CPU request per worker (default: %(default)s)")
    k8s.add_argument("--memory", default=k.memory_request, help="memory request per worker (default: %(default)s)")
    k8s.add_argument("--memory-limit", default=k.memory_limit, help="memory limit per worker (default: %(default)s)")
    k8s.add_argument(
        "--kafka-config-secret",
        help="a Secret holding client.properties for a secured cluster (mounted at /etc/streamserve/kafka) "
        "and the keys sasl, username, password, tls, ca for KEDA",
    )
    k8s.add_argument(
        "--metrics-port",
        type=int,
        default=k.metrics_port,
        help="workers' metrics and health port, probed at /healthz and /readyz (default: %(default)s)",
    )


def _graph_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help="FILE.py:NAME, inside the current folder (the image's build context)")
    parser.add_argument(
        "--topics", help="topics.yaml with partitions, replication and retention (default: built-in defaults)"
    )


def _compose(args: argparse.Namespace) -> int:
    from pipeline.generate.commands import write_compose

    return write_compose(args)


def _k8s(args: argparse.Namespace) -> int:
    from pipeline.generate.commands import write_k8s

    return write_k8s(args)
