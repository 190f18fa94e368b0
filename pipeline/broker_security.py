"""A SASL_SSL listener for the embedded Apache Kafka: TLS from PEM files, SCRAM users created by
Kafka's own storage tool when the log is formatted, client certificates checked when given.

For tests and local trials of a secured set-up. The broker's own traffic (inter-broker, and
the readiness probe of :mod:`pipeline.broker`) uses a plaintext listener on 127.0.0.1 that is
never advertised to clients on the secured port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import BrokerError

__all__ = ["SaslSslListener"]

SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_WORD = re.compile(r"^[^,\[\]=\"\s]+$")


@dataclass(frozen=True)
class SaslSslListener:
    """The broker's client listener as SASL_SSL with SCRAM users.

    ``certificate`` and ``key`` are the broker's PEM certificate chain and PKCS#8 private key
    (``key_password`` if it is encrypted); ``client_ca``, when given, is the CA that client
    certificates must chain to, and ``client_auth`` whether one is ``requested`` (checked when
    a client presents one) or ``required``. ``users`` maps SCRAM user names to passwords.
    """

    certificate: Path
    key: Path
    users: Mapping[str, str] = field(repr=False)
    key_password: str | None = field(default=None, repr=False)
    client_ca: Path | None = None
    client_auth: Literal["none", "requested", "required"] = "none"
    mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        for name, password in self.users.items():
            if not (_PLAIN_WORD.match(name) and _PLAIN_WORD.match(password)):
                raise BrokerError(f'SCRAM user {name!r}: names and passwords may not hold , [ ] = " or spaces')
        if self.client_auth != "none" and self.client_ca is None:
            raise BrokerError(f"client_auth={self.client_auth!r} needs client_ca, the CA of client certificates")

    def properties(self, port: int, internal_port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
        """The ``server.properties`` entries for the listener (the keystore is written to ``data_dir``)."""
        keystore = data_dir / "broker-keystore.pem"
        keystore.write_text(Path(self.key).read_text() + "\n" + Path(self.certificate).read_text())
        keystore.chmod(0o600)
        host = "127.0.0.1"
        props = {
            "listeners": f"SASL_SSL://{host}:{port},INTERNAL://{host}:{internal_port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port},INTERNAL://{host}:{internal_port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            "sasl.enabled.mechanisms": self.mechanism,
            f"listener.name.sasl_ssl.{self.mechanism.lower()}.sasl.jaas.config": f"{SCRAM_LOGIN} required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            # On a SASL_SSL listener Kafka reads the client-certificate check only with the listener's prefix.
            "listener.name.sasl_ssl.ssl.client.auth": self.client_auth,
        }
        if self.key_password is not None:
            props["ssl.key.password"] = self.key_password
        if self.client_ca is not None:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = str(self.client_ca)
        return props

    def format_arguments(self) -> list[str]:
        """Arguments of ``kafka-storage format`` that create the SCRAM users."""
        arguments = []
        for name, password in self.users.items():
            arguments += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return arguments

    def client_config(self, user: str, ca: str | Path, **extra: Any) -> dict[str, Any]:
        """A ``kafka_config`` mapping that connects as ``user`` trusting ``ca`` (``extra``: more keys)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": self.mechanism,
            "sasl.username": user,
            "sasl.password": self.users[user],
            "ssl.ca.location": str(ca),
            **extra,
        }
