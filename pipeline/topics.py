"""Topic settings from ``topics.yaml`` and idempotent topic creation for a deployment plan."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from pipeline.errors import DeploymentError
from pipeline.kafka_access import start_client
from pipeline.kafka_config import KafkaConfigLike, resolve
from pipeline.plan import Plan

__all__ = ["TopicConfig", "create_topics", "ensure_topics", "load_topic_configs"]

logger = logging.getLogger(__name__)

_DAY_MS = 24 * 60 * 60 * 1000
_CONFIG = {"retention.ms": str(7 * _DAY_MS), "max.message.bytes": str(1024 * 1024)}  # 7 days, 1 MiB
_DEFAULTS = {"partitions": 4, "replication_factor": 1, "config": _CONFIG}
_DLQ_DEFAULTS = {"partitions": 1, "config": {"retention.ms": str(14 * _DAY_MS)}}
_SECTION_KEYS = {"partitions", "replication_factor", "config"}


@dataclass(frozen=True)
class TopicConfig:
    """How one topic is created: partition count, replication factor and Kafka topic configs."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def load_topic_configs(plan: Plan, path: str | Path | None = None) -> list[TopicConfig]:
    """One :class:`TopicConfig` per topic of ``plan``, in ``plan.topics()`` order.

    ``path`` is a ``topics.yaml`` with optional ``defaults`` (every topic) and
    ``topics.<name>`` (one topic) sections of ``partitions``, ``replication_factor``
    and ``config`` (Kafka topic configs). Later layers win: built-in defaults, the
    file's ``defaults``, the built-in dead-letter settings (1 partition, 14 days),
    the file's ``topics.<name>``. Unused topic names and bad keys or values raise DeploymentError.
    """
    where = str(path) if path is not None else "built-in topic defaults"
    try:
        data = yaml.safe_load(Path(path).read_text()) if path is not None else {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeploymentError(f"cannot read topic settings {where!r}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"defaults", "topics"}:
        raise DeploymentError(f"{where}: expected a mapping of 'defaults' and 'topics' only, got {data!r:.200}")
    overrides, names = data.get("topics") or {}, plan.topics()
    if not isinstance(overrides, dict):
        raise DeploymentError(f"{where}: 'topics' must map topic names to settings, got {overrides!r:.200}")
    if unknown := sorted(map(repr, set(overrides) - set(names))):
        raise DeploymentError(f"{where}: graph {plan.graph.name!r} uses no topic {', '.join(unknown)}; it uses {names}")
    defaults, configs = _section(data.get("defaults"), f"{where}: defaults"), []
    for name in names:
        merged: dict[str, Any] = {"config": {}}
        specific = _section(overrides.get(name), f"{where}: topics.{name}")
        for layer in (_DEFAULTS, defaults, _DLQ_DEFAULTS if name == plan.dlq else {}, specific):
            merged.update({key: value for key, value in layer.items() if key != "config"})
            merged["config"].update(layer.get("config", {}))
        configs.append(TopicConfig(name, merged["partitions"], merged["replication_factor"], merged["config"]))
    return configs


async def create_topics(
    bootstrap: str, configs: list[TopicConfig], *, timeout_s: float = 30, kafka_config: KafkaConfigLike = None
) -> dict[str, str]:
    """Create the missing topics of ``configs``; ``{name: "created" | "exists"}``.

    Existing topics stay as they are, but fewer partitions than configured raise DeploymentError.
    ``kafka_config``: how to connect (see :func:`pipeline.kafka_config.resolve`).
    """
    config = resolve(kafka_config)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **config.client_options()
    )
    try:
        await asyncio.wait_for(start_client(admin, bootstrap, config, "admin client"), timeout_s)
        return await asyncio.wait_for(_create(admin, bootstrap, configs, timeout_s), timeout_s)
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        raise DeploymentError(f"cannot set up topics on Kafka at {bootstrap} within {timeout_s} s: {exc!r}") from exc
    finally:
        await admin.close()


def ensure_topics(
    bootstrap: str, plan: Plan, path: str | Path | None = None, *, kafka_config: KafkaConfigLike = None
) -> dict[str, str]:
    """:func:`create_topics` for ``plan`` from blocking code; settings from ``path`` or built-in defaults."""
    logger.info("topic settings for graph %r from %s", plan.graph.name, path or "built-in defaults")
    return asyncio.run(create_topics(bootstrap, load_topic_configs(plan, path), kafka_config=kafka_config))


async def _create(admin: AIOKafkaAdminClient, bootstrap: str, configs: list[TopicConfig], timeout_s: float) -> dict:
    wanted = {config.name: config for config in configs}
    status = {name: "exists" for name in await _partition_counts(admin, ()) if name in wanted}
    new = [NewTopic(c.name, c.partitions, c.replication_factor, topic_configs=c.config) for c in configs]
    failures = []
    if missing := [topic for topic in new if topic.name not in status]:
        response = await admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
        for name, code, *message in response.topic_errors:
            if code in (0, TopicAlreadyExistsError.errno):  # already exists: someone created it meanwhile
                status[name] = "exists" if code else "created"
                logger.debug("topic %s: %s (%s)", name, status[name], wanted[name])
            else:
                error, detail = for_code(code), next(iter(message), None)
                failures.append(f"cannot create topic {name!r}: {error.__name__}: {detail or error.description}")
    existing = [name for name, state in status.items() if state == "exists"]
    counts = await _partition_counts(admin, existing)
    for name in existing:
        count, want = counts[name], wanted[name].partitions
        if count < want:
            failures.append(
                f"topic {name!r} has {count} partition(s) but {want} are configured: raise it with `kafka-topics.sh "
                f"--bootstrap-server {bootstrap} --alter --topic {name} --partitions {want}` (keys move to other "
                f"partitions: drain keyed topics such as joins first), or set partitions: {count} for it in topics.yaml"
            )
        elif count > want:
            logger.warning("topic %s has %d partitions, more than the %d configured; leaving it", name, count, want)
    if failures:
        raise DeploymentError("; ".join(failures))
    return {name: status[name] for name in wanted}


async def _partition_counts(admin: AIOKafkaAdminClient, names: Any) -> dict[str, int]:
    """Partition count of every topic in the cluster, once all of ``names`` show in its metadata."""
    while True:  # all topics: naming a missing one could auto-create it where brokers allow that
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["partitions"]}
        if all(name in counts for name in names):
            return counts
        await asyncio.sleep(0.2)


def _section(entry: Any, where: str) -> dict[str, Any]:
    entry = {} if entry is None else entry
    if not isinstance(entry, dict) or set(entry) - _SECTION_KEYS:
        raise DeploymentError(f"{where}: expected only {', '.join(sorted(_SECTION_KEYS))}, got {entry!r:.200}")
    for key in ("partitions", "replication_factor"):
        value = entry.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DeploymentError(f"{where}: {key} must be a whole number >= 1, got {value!r}")
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise DeploymentError(f"{where}: config must map Kafka topic configs to values, got {config!r:.200}")
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise DeploymentError(f"{where}: config {key!r} must be text or a number, got {value!r}")
    return {**entry, "config": {key: str(v).lower() if isinstance(v, bool) else str(v) for key, v in config.items()}}
