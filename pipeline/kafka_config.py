"""One Kafka client configuration for every client streamserve makes (agents, admin, produce,
consume, replay, inspect): security protocol, SASL and TLS, with the keys users know from
librdkafka/kcat and the Java client.

Given as a Kafka-style properties file (``--kafka-config FILE``, or ``$STREAMSERVE_KAFKA_CONFIG``
naming one) or a mapping in Python (``kafka_config={...}``); :func:`resolve` turns any of these
into a :class:`KafkaConfig`, and :meth:`KafkaConfig.client_options` into aiokafka's keyword
arguments. Secrets never appear in its ``repr``, its :meth:`KafkaConfig.describe` or its errors.
"""

from __future__ import annotations

import functools
import importlib
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pipeline.errors import DeploymentError
from pipeline.properties import jaas_credentials, read_properties

__all__ = ["ENV", "KNOWN_KEYS", "KafkaConfig", "KafkaConfigLike", "load_kafka_config", "read_properties", "resolve"]

ENV = "STREAMSERVE_KAFKA_CONFIG"
Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
KNOWN_KEYS: tuple[str, ...] = (
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "sasl.oauthbearer.token.provider",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)
_ALIASES = {"sasl.mechanisms": "sasl.mechanism"}  # librdkafka's plural spelling
_SECRETS = frozenset({"sasl.password", "ssl.key.password", "sasl.jaas.config"})
_HINTS = {
    "ssl.truststore.location": "use ssl.ca.location with the CA certificate as PEM "
    "(from a JKS truststore: keytool -exportcert -rfc -alias ca -keystore truststore.jks)",
    "ssl.keystore.location": "use ssl.certificate.location and ssl.key.location with PEM files",
    "sasl.user": "use sasl.username",
}


@dataclass(frozen=True)
class KafkaConfig:
    """How every Kafka client connects: the protocol, SASL credentials and TLS files.

    ``source`` names where it came from (a file, the environment, ``kafka_config``), for messages.
    Build one with :meth:`from_properties` or :func:`resolve`, which check it.
    """

    security_protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    oauth_token_provider: Any = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    bootstrap_servers: str | None = None
    source: str = "defaults"

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any], source: str = "kafka_config") -> KafkaConfig:
        """Check ``properties`` (Kafka client keys, see :data:`KNOWN_KEYS`) and build the config;
        a DeploymentError names the first wrong key and what is known."""
        props: dict[str, Any] = {}
        for raw_key, value in properties.items():
            key = _ALIASES.get(str(raw_key).strip(), str(raw_key).strip())
            if key not in KNOWN_KEYS:
                hint = f" ({_HINTS[key]})" if key in _HINTS else ""
                raise DeploymentError(
                    f"{source}: unknown Kafka client setting {key!r}{hint}; known settings: {', '.join(KNOWN_KEYS)}"
                )
            props[key] = value.strip() if isinstance(value, str) else value
        protocol = str(props.get("security.protocol") or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise DeploymentError(f"{source}: security.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        sasl = _sasl(props, protocol, source)
        tls = _tls(props, protocol, source)
        config = cls(
            security_protocol=protocol,  # type: ignore[arg-type]
            bootstrap_servers=_text(props.get("bootstrap.servers")),
            source=source,
            **sasl,
            **tls,
        )
        if config.uses_tls:
            config.ssl_context()  # read the files now: a wrong key password fails here, not in a client
        return config

    @property
    def uses_tls(self) -> bool:
        """Whether connections are TLS (SSL, SASL_SSL)."""
        return self.security_protocol.endswith("SSL")

    @property
    def uses_sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.security_protocol.startswith("SASL")

    def to_properties(self) -> dict[str, str]:
        """The config as Kafka client properties (for a file that worker processes read)."""
        if self.oauth_token_provider is not None:
            raise DeploymentError(f"{self.source}: an OAUTHBEARER token provider object cannot be written to a file")
        fields = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
            "ssl.endpoint.identification.algorithm": None if self.ssl_check_hostname else "none",
        }
        return {key: str(value) for key, value in fields.items() if value is not None}

    def describe(self) -> str:
        """A one-line summary for logs: protocol, mechanism, user and files; never a secret."""
        parts = [self.security_protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username!r}" if self.sasl_username else "OAUTHBEARER")
        if self.uses_tls:
            parts.append(f"CA {self.ssl_ca_location or 'system default'}")
            if self.ssl_certificate_location:
                parts.append(f"client certificate {self.ssl_certificate_location}")
            if not self.ssl_check_hostname:
                parts.append("no host name check")
        return f"{', '.join(parts)} (from {self.source})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every client shares (None without TLS); a DeploymentError names the file
        that cannot be used."""
        if not self.uses_tls:
            return None
        return _ssl_context(
            self.ssl_ca_location,
            self.ssl_certificate_location,
            self.ssl_key_location,
            self.ssl_key_password,
            self.ssl_check_hostname,
            self.source,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                options["sasl_oauth_token_provider"] = self.oauth_token_provider
            else:
                options["sasl_plain_username"] = self.sasl_username
                options["sasl_plain_password"] = self.sasl_password
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        return options


KafkaConfigLike: TypeAlias = "KafkaConfig | Mapping[str, Any] | str | Path | None"
PLAINTEXT = KafkaConfig()


def resolve(config: KafkaConfigLike = None) -> KafkaConfig:
    """The config ``config`` stands for: a KafkaConfig as it is, a mapping of Kafka keys, a
    properties file path; None reads the file ``$STREAMSERVE_KAFKA_CONFIG`` names, else PLAINTEXT."""
    if isinstance(config, KafkaConfig):
        return config
    if isinstance(config, Mapping):
        return KafkaConfig.from_properties(config)
    if config is not None:
        return load_kafka_config(config)
    path = os.environ.get(ENV)
    if not path:
        return PLAINTEXT
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = -1  # load_kafka_config names the problem
    return _load_cached(path, stamp, f"{path} (from ${ENV})")


def load_kafka_config(path: str | Path, source: str | None = None) -> KafkaConfig:
    """The config in the properties file ``path``."""
    return KafkaConfig.from_properties(read_properties(path), source or str(path))


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, stamp: int, source: str) -> KafkaConfig:
    return load_kafka_config(path, source)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _sasl(props: dict[str, Any], protocol: str, source: str) -> dict[str, Any]:
    keys = [key for key in props if key.startswith("sasl.")]
    if not protocol.startswith("SASL"):
        if keys:
            raise DeploymentError(
                f"{source}: {', '.join(keys)} set but security.protocol is {protocol}: use SASL_SSL or SASL_PLAINTEXT"
            )
        return {}
    mechanism = str(props.get("sasl.mechanism") or "").upper()
    if mechanism not in MECHANISMS:
        got = f"sasl.mechanism {mechanism!r}" if mechanism else "no sasl.mechanism"
        raise DeploymentError(
            f"{source}: security.protocol {protocol} needs sasl.mechanism, one of {', '.join(MECHANISMS)}; got {got}"
        )
    if mechanism == "OAUTHBEARER":
        return {"sasl_mechanism": mechanism, "oauth_token_provider": _token_provider(props, source)}
    username, password = _text(props.get("sasl.username")), _text(props.get("sasl.password"))
    if props.get("sasl.jaas.config"):
        jaas_user, jaas_password = jaas_credentials(str(props["sasl.jaas.config"]), mechanism, source)
        if (username and username != jaas_user) or (password and password != jaas_password):
            raise DeploymentError(f"{source}: set either sasl.username/sasl.password or sasl.jaas.config, not both")
        username, password = jaas_user, jaas_password
    if not username or password is None:
        raise DeploymentError(
            f"{source}: sasl.mechanism {mechanism} needs sasl.username and sasl.password (or sasl.jaas.config)"
        )
    return {"sasl_mechanism": mechanism, "sasl_username": username, "sasl_password": password}


def _token_provider(props: dict[str, Any], source: str) -> Any:
    """The OAUTHBEARER token provider: an object, or ``module:attribute`` naming a class or object."""
    from aiokafka.abc import AbstractTokenProvider

    given = props.get("sasl.oauthbearer.token.provider")
    if not given:
        raise DeploymentError(
            f"{source}: sasl.mechanism OAUTHBEARER needs sasl.oauthbearer.token.provider, the import path "
            "(module:name) of an aiokafka.abc.AbstractTokenProvider"
        )
    provider = given
    if isinstance(given, str):
        module, _, name = given.partition(":")
        try:
            provider = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise DeploymentError(f"{source}: cannot import sasl.oauthbearer.token.provider {given!r}: {exc}") from exc
    if isinstance(provider, type):
        provider = provider()
    if not isinstance(provider, AbstractTokenProvider):
        raise DeploymentError(f"{source}: sasl.oauthbearer.token.provider must be an aiokafka AbstractTokenProvider")
    return provider


def _tls(props: dict[str, Any], protocol: str, source: str) -> dict[str, Any]:
    keys = [key for key in props if key.startswith("ssl.")]
    if not protocol.endswith("SSL"):
        if keys:
            raise DeploymentError(
                f"{source}: {', '.join(keys)} set but security.protocol is {protocol}: use SSL or SASL_SSL"
            )
        return {}
    files = {}
    for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
        path = _text(props.get(key))
        if path is not None and not Path(path).is_file():
            raise DeploymentError(f"{source}: {key} {path!r} is not a readable file")
        files[key] = path
    if files["ssl.key.location"] and not files["ssl.certificate.location"]:
        raise DeploymentError(f"{source}: ssl.key.location is set without ssl.certificate.location")
    algorithm = str(props.get("ssl.endpoint.identification.algorithm", "https")).strip().lower()
    if algorithm not in ("https", "", "none"):
        raise DeploymentError(
            f"{source}: ssl.endpoint.identification.algorithm must be https (check the broker's host name) "
            f"or empty/none (do not), got {algorithm!r}"
        )
    return {
        "ssl_ca_location": files["ssl.ca.location"],
        "ssl_certificate_location": files["ssl.certificate.location"],
        "ssl_key_location": files["ssl.key.location"],
        "ssl_key_password": _text(props.get("ssl.key.password")),
        "ssl_check_hostname": algorithm == "https",
    }


@functools.lru_cache(maxsize=16)
def _ssl_context(
    ca: str | None, certificate: str | None, key: str | None, password: str | None, check_hostname: bool, source: str
) -> ssl.SSLContext:
    from aiokafka.helpers import create_ssl_context

    try:
        context = create_ssl_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise DeploymentError(f"{source}: ssl.ca.location {ca!r} is not a PEM CA certificate: {exc}") from None
    if certificate:
        try:
            context.load_cert_chain(certificate, key, password=password)
        except (OSError, ssl.SSLError) as exc:
            what = "the key or ssl.key.password is wrong" if password else "is the key encrypted? set ssl.key.password"
            raise DeploymentError(
                f"{source}: cannot load ssl.certificate.location {certificate!r} with ssl.key.location "
                f"{key or certificate!r} ({what}): {exc}"
            ) from None
    context.check_hostname = check_hostname
    return context
