"""The Kafka client config: properties files with the keys of librdkafka/kcat and the Java client,
checked whole, turned into aiokafka's options, never showing a secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from certs import Authority

from pipeline.errors import DeploymentError
from pipeline.kafka_config import ENV, KNOWN_KEYS, KafkaConfig, load_kafka_config, read_properties, resolve

JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3cr=t;x";'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    authority = Authority(tmp_path_factory.mktemp("pki"), "ca")
    client = authority.issue("client", password="key-pass")
    return {"ca": authority.certificate, "cert": client.certificate, "key": client.key}


def test_a_properties_file_as_kcat_and_java_write_them(tmp_path: Path, pki: dict[str, Path]) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# a comment\n"
        "! another\n"
        "bootstrap.servers = broker-1:9093,broker-2:9093\n"
        "security.protocol=sasl_ssl\n"
        "sasl.mechanisms: SCRAM-SHA-512\n"  # librdkafka's plural, a colon separator
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="alice" \\\n'
        '    password="s3cr=t;x";\n'
        f"ssl.ca.location={pki['ca']}\n"
        "ssl.endpoint.identification.algorithm=\n"
    )
    config = load_kafka_config(path)
    assert (config.security_protocol, config.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (config.sasl_username, config.sasl_password) == ("alice", "s3cr=t;x")
    assert config.bootstrap_servers == "broker-1:9093,broker-2:9093"
    options = config.client_options()
    assert options["sasl_plain_username"] == "alice" and options["sasl_plain_password"] == "s3cr=t;x"
    assert isinstance(options["ssl_context"], ssl.SSLContext) and not options["ssl_context"].check_hostname
    assert read_properties(path)["sasl.jaas.config"] == JAAS


def test_an_unknown_key_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(DeploymentError) as error:
        KafkaConfig.from_properties({"security.protocol": "SSL", "ssl.truststore.location": "/x.jks"})
    message = str(error.value)
    assert "'ssl.truststore.location'" in message and "ssl.ca.location" in message
    assert all(key in message for key in KNOWN_KEYS)


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"security.protocol": "TLS"}, "security.protocol 'TLS' is not one of"),
        ({"security.protocol": "SASL_SSL"}, "needs sasl.mechanism"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "sasl.mechanism 'GSSAPI'"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}, "sasl.password"),
        ({"sasl.username": "u"}, "security.protocol is PLAINTEXT: use SASL_SSL"),
        ({"ssl.ca.location": "/ca.pem"}, "security.protocol is PLAINTEXT: use SSL"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/no/such/ca.pem"}, "is not a readable file"),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.jaas.config": JAAS},
            "ScramLoginModule, which does not do sasl.mechanism PLAIN",
        ),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}, "sasl.oauthbearer.token.provider"),
        ({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"}, "must be https"),
    ],
)
def test_wrong_settings_say_what_to_fix(properties: dict[str, str], expected: str) -> None:
    with pytest.raises(DeploymentError) as error:
        KafkaConfig.from_properties(properties, source="client.properties")
    assert expected in str(error.value) and str(error.value).startswith("client.properties: ")


def test_secrets_never_show(pki: dict[str, Path]) -> None:
    config = KafkaConfig.from_properties(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.jaas.config": JAAS,
            "ssl.ca.location": str(pki["ca"]),
            "ssl.certificate.location": str(pki["cert"]),
            "ssl.key.location": str(pki["key"]),
            "ssl.key.password": "key-pass",
        }
    )
    for text in (repr(config), str(config), config.describe()):
        assert "s3cr=t" not in text and "key-pass" not in text
    assert "SCRAM-SHA-256 as 'alice'" in config.describe()


def test_a_wrong_key_password_fails_when_the_config_is_read(pki: dict[str, Path]) -> None:
    properties = {
        "security.protocol": "SSL",
        "ssl.certificate.location": str(pki["cert"]),
        "ssl.key.location": str(pki["key"]),
        "ssl.key.password": "Zebra-77",
    }
    with pytest.raises(DeploymentError) as error:
        KafkaConfig.from_properties(properties)
    assert "the key or ssl.key.password is wrong" in str(error.value) and "Zebra-77" not in str(error.value)


def test_the_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.properties"
    path.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=bob\nsasl.password=pw\n")
    monkeypatch.delenv(ENV, raising=False)
    assert resolve(None).security_protocol == "PLAINTEXT"
    monkeypatch.setenv(ENV, str(path))
    config = resolve(None)
    assert config.sasl_username == "bob" and f"${ENV}" in config.source
    assert resolve({"security.protocol": "PLAINTEXT"}).security_protocol == "PLAINTEXT"  # explicit wins
    monkeypatch.setenv(ENV, str(tmp_path / "missing.properties"))
    with pytest.raises(DeploymentError, match="cannot read the Kafka client config"):
        resolve(None)


class StaticToken:
    """An OAUTHBEARER token provider for the config tests (aiokafka's AbstractTokenProvider)."""


def _provider_class() -> type:
    from aiokafka.abc import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        async def token(self) -> str:
            return "a-token"

    return Provider


TokenProvider = _provider_class()


def test_oauthbearer_takes_a_token_provider_by_import_path() -> None:
    config = KafkaConfig.from_properties(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.token.provider": f"{__name__}:TokenProvider",
        }
    )
    options = config.client_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER" and isinstance(
        options["sasl_oauth_token_provider"], TokenProvider
    )
    with pytest.raises(DeploymentError, match="must be an aiokafka AbstractTokenProvider"):
        KafkaConfig.from_properties(
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "OAUTHBEARER",
                "sasl.oauthbearer.token.provider": f"{__name__}:StaticToken",
            }
        )
