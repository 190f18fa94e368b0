"""The ``compose`` and ``k8s`` commands: parsed arguments in, files written out."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pipeline.errors import DeploymentError
from pipeline.generate.compose import compose_text
from pipeline.generate.k8s import MARKER, manifest_texts
from pipeline.generate.options import ComposeOptions, K8sOptions
from pipeline.generate.spec import describe

__all__ = ["compose_command", "k8s_command", "write_compose", "write_k8s"]


def compose_options(args: argparse.Namespace) -> ComposeOptions:
    """The compose settings the arguments ask for."""
    return ComposeOptions(
        image=args.image, build=args.build, metrics_port=args.metrics_port, kafka_config=args.kafka_config
    )


def k8s_options(args: argparse.Namespace) -> K8sOptions:
    """The Kubernetes settings the arguments ask for (checked: counts must be positive)."""
    for flag, value in (("--lag-threshold", args.lag_threshold), ("--min-replicas", args.min_replicas)):
        if value < 1:
            raise DeploymentError(f"{flag} must be 1 or more, got {value}")
    return K8sOptions(
        image=args.image,
        bootstrap=args.bootstrap,
        lag_threshold=args.lag_threshold,
        min_replicas=args.min_replicas,
        cpu_request=args.cpu,
        memory_request=args.memory,
        memory_limit=args.memory_limit,
        metrics_port=args.metrics_port,
        kafka_config_secret=args.kafka_config_secret,
    )


def compose_command(graph: str, topics: str | None, options: ComposeOptions) -> str:
    """The ``streamserve compose`` line that makes this file (output path left out), for its header."""
    words = ["streamserve", "compose", graph, *(["--topics", topics] if topics else [])]
    defaults = ComposeOptions()
    if options.image != defaults.image:
        words += ["--image", options.image]
    if not options.build:
        words.append("--no-build")
    if options.metrics_port is not None:
        words += ["--metrics-port", str(options.metrics_port)]
    if options.kafka_config is not None:
        words += ["--kafka-config", options.kafka_config]
    return shlex.join(words)


def k8s_command(graph: str, topics: str | None, options: K8sOptions) -> str:
    """The ``streamserve k8s`` line that makes these files (output folder left out), for their headers."""
    words = ["streamserve", "k8s", graph, *(["--topics", topics] if topics else [])]
    defaults = K8sOptions()
    flags = {
        "--image": "image",
        "--bootstrap": "bootstrap",
        "--lag-threshold": "lag_threshold",
        "--min-replicas": "min_replicas",
        "--cpu": "cpu_request",
        "--memory": "memory_request",
        "--memory-limit": "memory_limit",
        "--metrics-port": "metrics_port",
        "--kafka-config-secret": "kafka_config_secret",
    }
    for flag, field in flags.items():
        if getattr(options, field) != getattr(defaults, field):
            words += [flag, str(getattr(options, field))]
    return shlex.join(words)


def write_compose(args: argparse.Namespace) -> int:
    """``streamserve compose``: write the compose file (or print it for ``-o -``)."""
    spec = describe(args.graph, topics=args.topics)
    options = compose_options(args)
    text = compose_text(spec, options, command=compose_command(spec.reference, spec.topics_file, options))
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    _write(Path(args.output), text)
    print(f"wrote {args.output}: kafka, topics and {len(spec.steps)} step services", file=sys.stderr)
    return 0


def write_k8s(args: argparse.Namespace) -> int:
    """``streamserve k8s``: write the manifests into the output folder, removing files that an
    earlier run generated there and this one does not (a step that left the graph)."""
    options = k8s_options(args)
    spec = describe(args.graph, topics=args.topics)
    texts = manifest_texts(spec, options, command=k8s_command(spec.reference, spec.topics_file, options))
    folder = Path(args.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stale = [path for path in folder.glob("*.yaml") if path.name not in texts and _generated(path)]
    except OSError as exc:
        raise DeploymentError(f"cannot write to {str(folder)!r}: {exc}") from exc
    for name, text in texts.items():
        _write(folder / name, text)
    for path in stale:
        path.unlink()
    print(f"wrote {len(texts)} files to {folder} ({len(stale)} stale removed)", file=sys.stderr)
    return 0


def _generated(path: Path) -> bool:
    with path.open() as file:
        return file.readline().startswith(MARKER)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise DeploymentError(f"cannot write {str(path)!r}: {exc}") from exc
