"""Deployment files (docker-compose.yml, topics.yaml, Dockerfile) and idempotent topic creation."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.broker import EmbeddedKafka
from pipeline.errors import DeploymentError
from pipeline.loading import load_graph
from pipeline.plan import Plan, build_plan
from pipeline.topics import TopicConfig, create_topics, load_topic_configs

ROOT = Path(__file__).resolve().parent.parent
GRAPH = "examples/iris/iris.py:graph"
TOPICS_YAML = ROOT / "topics.yaml"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(load_graph(str(ROOT / GRAPH)))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def step_of(service: dict[str, Any]) -> str | None:
    command = service.get("command") or []
    return command[command.index("--step") + 1] if "--step" in command else None


# docker-compose.yml


def test_compose_runs_one_service_per_agent(compose: dict[str, Any], plan: Plan) -> None:
    steps = {name: step_of(service) for name, service in compose["services"].items() if step_of(service)}
    agents = [agent.name for agent in plan.agents]
    assert sorted(steps.values()) == sorted(agents), "every agent has exactly one service, every --step is an agent"
    assert {name: step.replace(".", "-") for name, step in steps.items()} == {name: name for name in steps}


def test_compose_step_services_scale_and_wait_for_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if not step_of(service):
            continue
        assert service["command"][:2] == ["run", GRAPH], name
        assert service["command"][-2:] == ["--bootstrap", "kafka:9092"], name
        assert "container_name" not in service and "ports" not in service, f"{name} could not be scaled"
        assert service["restart"] == "unless-stopped", name
        assert service["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}, name
        assert service["environment"]["STREAMSERVE_MODEL_DIR"] == "/models", name
        assert "models:/models" in service["volumes"], name
    assert services["topics"]["command"] == [
        "topics",
        "create",
        GRAPH,
        "--config",
        "topics.yaml",
        "--bootstrap",
        "kafka:9092",
    ]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert "healthcheck" in services["kafka"]
    assert {"models", "kafka-data"} <= set(compose["volumes"])


def test_dockerfile_runs_streamserve_as_non_root_from_app() -> None:
    lines = [line.split(None, 1) for line in (ROOT / "Dockerfile").read_text().splitlines() if line[:1].isalpha()]
    instructions = {word: rest for word, rest in lines if word != "RUN"}
    assert instructions["FROM"] == "python:3.11-slim"
    assert instructions["WORKDIR"] == "/app"
    assert instructions["ENTRYPOINT"] == '["streamserve"]'
    assert instructions["USER"] not in {"root", "0"}
    assert "pip install" in (ROOT / "Dockerfile").read_text()


@pytest.mark.compose
def test_docker_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no Docker engine: the docker CLI is not installed")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"no Docker engine: `docker info` exited {info.returncode}: {info.stderr.strip()[-300:]}")
    done = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# topics.yaml and load_topic_configs


def test_topics_yaml_covers_exactly_the_plan_topics(plan: Plan) -> None:
    configs = {config.name: config for config in load_topic_configs(plan, TOPICS_YAML)}
    assert list(configs) == plan.topics()
    assert set(yaml.safe_load(TOPICS_YAML.read_text())["topics"]) <= set(plan.topics())
    assert configs[plan.dlq].partitions == 1
    assert int(configs[plan.dlq].config["retention.ms"]) > int(configs[plan.source].config["retention.ms"])
    assert configs["iris.vote.join"].config["cleanup.policy"] == "delete"
    assert all(set(c.config) >= {"retention.ms", "max.message.bytes"} for c in configs.values())


def test_built_in_defaults(plan: Plan) -> None:
    configs = {config.name: config for config in load_topic_configs(plan)}
    assert list(configs) == plan.topics()
    week, fortnight, mib = "604800000", "1209600000", "1048576"
    assert configs["iris.lr"] == TopicConfig("iris.lr", 4, 1, {"retention.ms": week, "max.message.bytes": mib})
    assert configs["iris.dlq"] == TopicConfig("iris.dlq", 1, 1, {"retention.ms": fortnight, "max.message.bytes": mib})


def test_file_layers_over_the_defaults(plan: Plan, tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(
        "defaults: {partitions: 8, config: {retention.ms: 1000, compression.type: zstd, preallocate: true}}\n"
        "topics: {iris.rf: {replication_factor: 3, config: {retention.ms: '2000'}}}\n"
    )
    configs = {config.name: config for config in load_topic_configs(plan, str(path))}
    assert configs["iris.lr"].partitions == 8
    assert configs["iris.lr"].config == {
        "retention.ms": "1000",
        "max.message.bytes": "1048576",
        "compression.type": "zstd",
        "preallocate": "true",
    }
    assert (configs["iris.rf"].replication_factor, configs["iris.rf"].config["retention.ms"]) == (3, "2000")
    assert configs["iris.dlq"].partitions == 1, "the dead-letter defaults win over the file's defaults"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topics: {iris.lrr: {partitions: 2}, iris.lr: {partitions: 2}}", "uses no topic 'iris.lrr'"),
        ("topics: {iris.lr: {partitions: two}}", "topics.iris.lr: partitions must be a whole number"),
        ("defaults: {partitions: 0}", "defaults: partitions must be a whole number >= 1, got 0"),
        ("defaults: {replication_factor: true}", "replication_factor must be a whole number"),
        ("defaults: {retention.ms: 5}", "expected only config, partitions, replication_factor"),
        ("defaults: {config: {retention.ms: [1, 2]}}", "config 'retention.ms' must be text or a number"),
        ("defaults: {config: [retention.ms]}", "config must map Kafka topic configs"),
        ("topic: {}", "expected a mapping of 'defaults' and 'topics' only"),
        ("topics: [iris.lr]", "'topics' must map topic names"),
        ("defaults: [", "cannot read topic settings"),
    ],
)
def test_bad_topic_settings_are_named(plan: Plan, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    with pytest.raises(DeploymentError, match=re.escape(message)):
        load_topic_configs(plan, path)


def test_missing_file_is_named(plan: Plan, tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="cannot read topic settings"):
        load_topic_configs(plan, tmp_path / "nope.yaml")


# create_topics against a real broker


@pytest.fixture(scope="module")
def kafka() -> Iterator[EmbeddedKafka]:
    with EmbeddedKafka() as broker:
        yield broker


async def make_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


@pytest.mark.kafka
def test_create_topics_is_idempotent(kafka: EmbeddedKafka, plan: Plan) -> None:
    configs = load_topic_configs(plan, TOPICS_YAML)
    assert asyncio.run(create_topics(kafka.bootstrap, configs)) == {name: "created" for name in plan.topics()}
    assert asyncio.run(create_topics(kafka.bootstrap, configs)) == {name: "exists" for name in plan.topics()}


@pytest.mark.kafka
def test_too_few_partitions_is_an_error_that_says_how_to_fix_it(kafka: EmbeddedKafka) -> None:
    name = f"test-deploy-{uuid.uuid4().hex[:8]}"
    asyncio.run(make_topic(kafka.bootstrap, name, 1))
    with pytest.raises(DeploymentError, match="has 1 partition") as raised:
        asyncio.run(create_topics(kafka.bootstrap, [TopicConfig(name, 4, 1)]))
    assert f"--alter --topic {name} --partitions 4" in str(raised.value)


@pytest.mark.kafka
def test_more_partitions_than_configured_is_only_a_warning(
    kafka: EmbeddedKafka, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"test-deploy-{uuid.uuid4().hex[:8]}"
    asyncio.run(make_topic(kafka.bootstrap, name, 3))
    with caplog.at_level(logging.WARNING, logger="pipeline.topics"):
        assert asyncio.run(create_topics(kafka.bootstrap, [TopicConfig(name, 2, 1)])) == {name: "exists"}
    assert f"topic {name} has 3 partitions, more than the 2 configured" in caplog.text


@pytest.mark.kafka
def test_broker_refusals_are_deployment_errors(kafka: EmbeddedKafka) -> None:
    name = f"test-deploy-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DeploymentError, match=f"cannot create topic '{name}': InvalidReplicationFactorError"):
        asyncio.run(create_topics(kafka.bootstrap, [TopicConfig(name, 1, 3)]))
    with pytest.raises(DeploymentError, match=r"cannot create topic .*InvalidConfig"):
        asyncio.run(create_topics(kafka.bootstrap, [TopicConfig(name, 1, 1, {"retention.ms": "soon"})]))


def test_unreachable_cluster_is_a_deployment_error() -> None:
    with pytest.raises(DeploymentError, match=re.escape("cannot set up topics on Kafka at 127.0.0.1:1")):
        asyncio.run(create_topics("127.0.0.1:1", [TopicConfig("t", 1, 1)], timeout_s=5))
