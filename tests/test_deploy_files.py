"""Deployment files: docker-compose.yml and examples/iris/k8s/ (generated, current, well-formed),
the Dockerfile, topics.yaml, and idempotent topic creation."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.broker import EmbeddedKafka
from pipeline.errors import DeploymentError
from pipeline.generate.__main__ import main as generate
from pipeline.loading import load_graph
from pipeline.plan import Plan, build_plan
from pipeline.topics import TopicConfig, create_topics, load_topic_configs

ROOT = Path(__file__).resolve().parent.parent
GRAPH = "examples/iris/iris.py:graph"
TOPICS_YAML = ROOT / "topics.yaml"
K8S = ROOT / "examples" / "iris" / "k8s"
REGENERATE = f"streamserve compose {GRAPH} --topics topics.yaml; streamserve k8s {GRAPH} --topics topics.yaml -o {K8S}"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(load_graph(str(ROOT / GRAPH)))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict[str, Any]]]:
    return {path.name: list(yaml.safe_load_all(path.read_text())) for path in sorted(K8S.glob("*.yaml"))}


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)
    return ROOT


def step_of(service: dict[str, Any]) -> str | None:
    command = service.get("command") or []
    return command[command.index("--step") + 1] if "--step" in command else None


# generated files are current


def test_compose_file_is_current(in_root: Path, tmp_path: Path) -> None:
    assert generate(["compose", GRAPH, "--topics", "topics.yaml", "-o", str(tmp_path / "c.yml")]) == 0
    assert (tmp_path / "c.yml").read_text() == (ROOT / "docker-compose.yml").read_text(), f"stale: run {REGENERATE}"


def test_k8s_manifests_are_current(in_root: Path, tmp_path: Path) -> None:
    assert generate(["k8s", GRAPH, "--topics", "topics.yaml", "-o", str(tmp_path)]) == 0
    fresh = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert fresh == {path.name: path.read_text() for path in K8S.iterdir()}, f"stale: run {REGENERATE}"


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
        assert (service["restart"], service["stop_grace_period"]) == ("unless-stopped", "30s"), name
        assert service["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}, name
        assert service["environment"]["STREAMSERVE_MODEL_DIR"] == "/models", name
        assert "models:/models" in service["volumes"], name
        assert service["build"]["args"]["PYTHON_IMAGE"] == "${STREAMSERVE_PYTHON_IMAGE:-python:3.11-slim}", name
    topics = services["topics"]
    create = f"streamserve topics create {GRAPH} --config topics.yaml --bootstrap kafka:9092"
    assert topics["entrypoint"] == ["timeout", "180", "sh", "-c"]
    assert topics["command"] == [f"until {create}; do echo waiting for Kafka; sleep 2; done"]
    assert (topics["depends_on"], topics["restart"]) == ({"kafka": {"condition": "service_healthy"}}, "no")
    kafka = services["kafka"]
    assert kafka["image"] == "${STREAMSERVE_KAFKA_IMAGE:-apache/kafka:4.1.1}"
    assert kafka["ports"] == ["9094:9094"] and "kafka-broker-api-versions.sh" in kafka["healthcheck"]["test"][1]
    assert kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092,HOST://localhost:9094"
    assert {"models", "kafka-data"} <= set(compose["volumes"])


def test_dockerfile_runs_streamserve_as_non_root_from_app() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.split(None, 1) for line in text.splitlines() if line[:1].isalpha()]
    instructions = {word: rest for word, rest in lines if word != "RUN"}
    assert instructions["ARG"] == "PYTHON_IMAGE=python:3.11-slim", "the public base stays the default"
    assert instructions["FROM"] == "${PYTHON_IMAGE}"
    assert instructions["WORKDIR"] == "/app"
    assert instructions["ENTRYPOINT"] == '["streamserve"]'
    assert instructions["USER"] not in {"root", "0"}
    assert "pip install" in text


# examples/iris/k8s


def objects(k8s: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for docs in k8s.values() for doc in docs if doc["kind"] == kind}


def test_k8s_objects_are_well_formed_and_listed(k8s: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in k8s.items():
        for doc in docs:
            assert {"apiVersion", "kind"} <= set(doc), name
            assert doc["kind"] == "Kustomization" or doc["metadata"]["name"], name
    [kustomization] = k8s["kustomization.yaml"]
    assert sorted(kustomization["resources"]) == sorted(set(k8s) - {"kustomization.yaml"})


def test_k8s_schemas_validate_the_built_in_kinds(k8s: dict[str, list[dict[str, Any]]]) -> None:
    """Strict Kubernetes 1.30 JSON schemas (kubernetes-validate ships them: offline); KEDA's
    ScaledObject has no schema there and is checked field by field in the next test."""
    try:
        from kubernetes_validate.utils import ValidationError, validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: `pip install kubernetes-validate` (a test dependency)")
    kinds = {"Deployment", "Job", "ConfigMap"}
    checked = [validate(doc, "1.30", strict=True) for docs in k8s.values() for doc in docs if doc["kind"] in kinds]
    assert len(checked) == 7 + 2
    broken = next(doc for doc in k8s["iris-lr.yaml"] if doc["kind"] == "Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replica": 3}}
    with pytest.raises(ValidationError):
        validate(broken, "1.30", strict=True)  # the schemas are strict: a misspelt field fails


def test_k8s_scales_each_agent_on_its_group_lag(k8s: dict[str, list[dict[str, Any]]], plan: Plan) -> None:
    partitions = {c.name: c.partitions for c in load_topic_configs(plan, TOPICS_YAML)}
    deployments, scaled = objects(k8s, "Deployment"), objects(k8s, "ScaledObject")
    for agent in plan.agents:
        name = f"iris-{agent.name.replace('.', '-')}"
        group = f"iris.{agent.name}"
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[:4] == ["run", GRAPH, "--step", agent.name] and args[-2:] == ["--metrics-port", "9400"], args
        assert container["ports"] == [{"name": "metrics", "containerPort": 9400}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert "replicas" not in deployments[name]["spec"], "KEDA owns the replica count"
        spec = scaled[name]["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers"}
        assert spec["scaleTargetRef"] == {"name": name}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, partitions[agent.input])
        [trigger] = spec["triggers"]
        assert trigger["type"] == "kafka" and all(isinstance(v, str) for v in trigger["metadata"].values())
        assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (group, agent.input)
        assert int(trigger["metadata"]["lagThreshold"]) > 0
    assert scaled["iris-lr"]["spec"]["maxReplicaCount"] == 6


def test_k8s_topics_job_reads_topics_yaml_from_its_config_map(k8s: dict[str, list[dict[str, Any]]]) -> None:
    [config_map, job] = k8s["iris-topics.yaml"]
    assert config_map["data"]["topics.yaml"] == TOPICS_YAML.read_text()
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == [
        "topics",
        "create",
        GRAPH,
        "--config",
        "/etc/streamserve/topics.yaml",
        "--bootstrap",
        "$(KAFKA_BOOTSTRAP_SERVERS)",
    ]
    assert pod["volumes"] == [{"name": "topics", "configMap": {"name": config_map["metadata"]["name"]}}]


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
    with pytest.raises(DeploymentError, match=re.escape("no Kafka broker answers at 127.0.0.1:1")):
        asyncio.run(create_topics("127.0.0.1:1", [TopicConfig("t", 1, 1)], timeout_s=5))


def test_a_secured_cluster_config_reaches_every_worker_the_topics_job_and_keda(tmp_path: Path) -> None:
    secret = "kafka-client"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "k8s",
            GRAPH,
            "--topics",
            "topics.yaml",
            "-o",
            str(tmp_path / "k8s"),
            "--kafka-config-secret",
            secret,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    docs = [
        doc for path in sorted((tmp_path / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc
    ]
    pods = [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] in ("Deployment", "Job")]
    assert pods and all({"name": "kafka-config", "secret": {"secretName": secret}} in pod["volumes"] for pod in pods)
    for pod in pods:
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert env["STREAMSERVE_KAFKA_CONFIG"] == "/etc/streamserve/kafka/client.properties"
    auth = [doc for doc in docs if doc["kind"] == "TriggerAuthentication"]
    assert len(auth) == 1 and auth[0]["metadata"]["name"] == f"{secret}-keda"
    triggers = [t for doc in docs if doc["kind"] == "ScaledObject" for t in doc["spec"]["triggers"]]
    assert triggers and all(t["authenticationRef"] == {"name": f"{secret}-keda"} for t in triggers)
    compose = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "compose",
            GRAPH,
            "--topics",
            "topics.yaml",
            "-o",
            "-",
            "--kafka-config",
            "/secrets/client.properties",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    services = yaml.safe_load(compose)["services"]
    workers = [s for name, s in services.items() if name != "kafka"]
    assert workers and all(
        s["environment"]["STREAMSERVE_KAFKA_CONFIG"] == "/etc/streamserve/kafka/client.properties" for s in workers
    )
    assert all(
        "/secrets/client.properties:/etc/streamserve/kafka/client.properties:ro" in s["volumes"] for s in workers
    )
