"""A secured cluster: the embedded Apache Kafka with a SASL_SSL + SCRAM-SHA-512 listener
(certificates made here, users made by Kafka's own storage tool). A graph deployed with the
right credentials answers; wrong credentials, an untrusted CA or a client certificate from
another CA are refused at start-up, clearly, without retries or tracebacks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from certs import Authority, Issued

from pipeline.broker import EmbeddedKafka, SaslSslListener
from pipeline.client import Request, consume, produce
from pipeline.errors import DeploymentError
from pipeline.kafka_access import start_client
from pipeline.kafka_config import ENV, KafkaConfig

pytestmark = pytest.mark.kafka
HELPERS = Path(__file__).parent / "helpers.py"
PASSWORD = "alice-Secret-42"
KEY_PASSWORD = "key-Pass-7"


@dataclass
class Secured:
    """The secured broker and the client configs the tests use."""

    broker: EmbeddedKafka
    folder: Path
    listener: SaslSslListener
    ca: Path
    other_ca: Path
    client: Issued  # a client certificate of the broker's CA
    stranger: Issued  # one of another CA

    def client_properties(self, issued: Issued | None = None, **properties: str) -> dict[str, str]:
        """Connect as alice with the certificate ``issued`` (default: the CA's client one),
        trusting the broker's CA, plus ``properties``."""
        certificate = {} if issued is None and properties.pop("no_certificate", "") else self._certificate(issued)
        return {**self.listener.client_config("alice", self.ca), **certificate, **properties}

    def _certificate(self, issued: Issued | None) -> dict[str, str]:
        issued = issued or self.client
        return {
            "ssl.certificate.location": str(issued.certificate),
            "ssl.key.location": str(issued.key),
            "ssl.key.password": KEY_PASSWORD,
        }

    def config_file(self, name: str, **properties: str) -> Path:
        """:meth:`client_properties` as a properties file."""
        path = self.folder / f"{name}.properties"
        settings = self.client_properties(**properties)
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    authority, other = Authority(folder / "ca", "ca"), Authority(folder / "other", "other-ca")
    server = authority.issue("broker", server=True)
    listener = SaslSslListener(
        server.certificate,
        server.key,
        users={"alice": PASSWORD},
        client_ca=authority.certificate,
        client_auth="required",  # mTLS and SCRAM: clients present a certificate of the CA
    )
    client = authority.issue("client", password=KEY_PASSWORD)
    stranger = other.issue("stranger", password=KEY_PASSWORD)
    with EmbeddedKafka(security=listener) as broker:
        yield Secured(broker, folder, listener, authority.certificate, other.certificate, client, stranger)


def streamserve(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_a_graph_deployed_with_the_right_credentials_answers(secured: Secured, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMSERVE_TEST_RUN", f"sec{time.time_ns()}")
    monkeypatch.delenv(ENV, raising=False)
    reference, bootstrap = f"{HELPERS}:fault_graph", secured.broker.bootstrap
    config = secured.config_file("good")
    access = ["--bootstrap", bootstrap, "--kafka-config", str(config)]
    created = streamserve("topics", "create", reference, *access)
    assert created.returncode == 0, created.stderr
    log = tmp_path / "worker.log"
    with open(log, "w") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", reference, *access], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        requests = tmp_path / "requests.jsonl"
        requests.write_text('{"id": "r1", "inputs": [[1.5]]}\n{"id": "r2", "inputs": [[4]]}\n')
        produced = streamserve("produce", reference, "--file", str(requests), *access)
        assert produced.returncode == 0, produced.stderr
        answers = _read(bootstrap, config, [f"{_graph_name()}.predictions"], 2)
        assert {a.event_id: a.body["outputs"] for a in answers} == {"r1": [3.0], "r2": [8]}
        shown = streamserve("consume", reference, *access, "--limit", "2")
        assert shown.returncode == 0, shown.stderr
        assert sorted(json.loads(line)["body"]["id"] for line in shown.stdout.splitlines()) == ["r1", "r2"]
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
    text = log.read_text()
    assert PASSWORD not in text and "SASL_SSL, SCRAM-SHA-512 as 'alice'" in text
    assert not [line for line in text.splitlines() if " ERROR " in line or " WARNING " in line], text


def _graph_name() -> str:
    from helpers import fault_graph

    return fault_graph().name


def _read(bootstrap: str, config: Path, topics: list[str], count: int) -> list:
    async def collect() -> list:
        seen: list = []
        async for _, record in consume(
            bootstrap, topics, timeout_s=60, until=lambda: len(seen) >= count, kafka_config=config
        ):
            seen.append(record)
        return seen

    return asyncio.run(collect())


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "SASL: the broker at 127.0.0.1"),
        ("untrusted CA", "TLS: the broker at 127.0.0.1"),
    ],
)
def test_a_refused_start_fails_fast_with_one_clear_message(secured: Secured, case: str, expected: str) -> None:
    config = (
        secured.config_file("bad-password", **{"sasl.password": "not-" + PASSWORD})
        if case == "wrong password"
        else secured.config_file("bad-ca", **{"ssl.ca.location": str(secured.other_ca)})
    )
    started = time.monotonic()
    done = streamserve(
        "run", f"{HELPERS}:fault_graph", "--bootstrap", secured.broker.bootstrap, "--kafka-config", str(config)
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert elapsed < 30, f"{case}: refused after {elapsed:.0f} s"
    message = [line for line in done.stderr.splitlines() if line.startswith("streamserve: ")]
    assert len(message) == 1 and expected in message[0], done.stderr
    assert "Traceback" not in done.stderr and "retrying" not in done.stderr and " ERROR " not in done.stderr
    assert PASSWORD not in done.stderr


def test_client_certificates_chaining_to_the_ca_are_accepted_others_refused(secured: Secured) -> None:
    async def send(properties: dict[str, str]) -> None:
        config = KafkaConfig.from_properties(properties)
        producer = AIOKafkaProducer(bootstrap_servers=secured.broker.bootstrap, **config.client_options())
        await start_client(producer, secured.broker.bootstrap, config, "producer")
        try:
            await producer.send_and_wait("mtls-check", b"x")
        finally:
            await producer.stop()

    asyncio.run(send(secured.client_properties()))
    for refused in (secured.client_properties(secured.stranger), secured.client_properties(no_certificate="yes")):
        with pytest.raises(DeploymentError, match=r"TLS: the handshake with 127\.0\.0\.1"):
            asyncio.run(send(refused))


def test_produce_and_consume_use_the_environments_config(secured: Secured, monkeypatch) -> None:
    monkeypatch.setenv(ENV, str(secured.config_file("env")))
    topic = f"env-{time.time_ns()}"
    requests = [Request({"inputs": [[n]]}) for n in range(3)]
    assert asyncio.run(produce(secured.broker.bootstrap, topic, requests)) == 3
    read = _read(secured.broker.bootstrap, secured.config_file("env"), [topic], 3)
    assert sorted(record.event_id for record in read) == sorted(r.id for r in requests)
