"""What the deployment generators need to know about a graph: its agents as deployable steps,
with their consumer groups, input topics and partition counts, and paths as the image sees them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DeploymentError
from pipeline.loading import load_graph
from pipeline.plan import build_plan
from pipeline.topics import load_topic_configs

__all__ = ["DeploySpec", "StepSpec", "describe"]

#: Where the image keeps the build context (the Dockerfile's ``WORKDIR`` and ``COPY . /app``).
IMAGE_ROOT = "/app"
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class StepSpec:
    """One agent as a deployed service: ``slug`` names its compose service, ``group`` is its
    consumer group, ``topic`` the topic it consumes and ``partitions`` that topic's partition
    count (the most replicas that share its load)."""

    agent: str
    slug: str
    group: str
    topic: str
    partitions: int


@dataclass(frozen=True)
class DeploySpec:
    """A graph ready to be written out as deployment files.

    ``reference`` is the graph's ``FILE.py:NAME`` relative to the build context (the folder the
    image copies to ``/app``); ``topics_file`` is topics.yaml relative to it, if one was given,
    and ``topics_text`` its contents.
    """

    graph: str
    reference: str
    steps: tuple[StepSpec, ...]
    topics_file: str | None = None
    topics_text: str | None = None

    def k8s_name(self, step: StepSpec | None = None, suffix: str = "") -> str:
        """A Kubernetes object name for ``step`` (or the graph, plus ``suffix``): ``<graph>-<step>``."""
        name = "-".join(part for part in (self.graph, step.slug if step else "", suffix) if part)
        name = name.lower().replace("_", "-")
        if not _K8S_NAME.match(name):
            raise DeploymentError(
                f"graph {self.graph!r}: {name!r} is not a valid Kubernetes name (at most 63 lowercase letters, "
                "digits and '-'): shorten the graph or step name"
            )
        return name


def describe(reference: str, *, topics: str | Path | None = None, context: str | Path | None = None) -> DeploySpec:
    """Load the graph ``reference`` (``FILE.py:NAME``) and describe its deployment.

    ``context`` is the image's build context (default: the current folder); the graph file and
    ``topics`` (a topics.yaml, optional) must lie inside it, as the image holds only that folder.
    Raises DeploymentError for files outside the context and for bad topic settings.
    """
    root = Path(context or Path.cwd()).resolve()
    plan = build_plan(load_graph(reference))
    configs = {config.name: config for config in load_topic_configs(plan, topics)}
    steps = tuple(
        StepSpec(
            agent.name,
            agent.name.replace(".", "-"),
            f"{plan.graph.name}.{agent.name}",
            agent.input,
            configs[agent.input].partitions,
        )
        for agent in plan.agents
    )
    slugs = [step.slug.lower() for step in steps]
    if clashes := sorted({slug for slug in slugs if slugs.count(slug) > 1}):
        raise DeploymentError(f"graph {plan.graph.name!r}: steps {clashes} map to the same service name; rename one")
    target, _, attribute = reference.rpartition(":") if ":" in reference else (reference, ":", "graph")
    if target.endswith(".py"):
        reference = f"{_inside(root, target, 'graph file')}:{attribute}"
    return DeploySpec(
        graph=plan.graph.name,
        reference=reference,
        steps=steps,
        topics_file=_inside(root, topics, "topics file") if topics is not None else None,
        topics_text=Path(topics).read_text() if topics is not None else None,
    )


def _inside(root: Path, path: str | Path, what: str) -> str:
    """``path`` relative to ``root``, in the POSIX form the image uses."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        raise DeploymentError(
            f"{what} {str(path)!r} is outside the build context {str(root)!r}: the image holds only that folder "
            f"(copied to {IMAGE_ROOT}); run the command from a folder that contains it"
        ) from None
