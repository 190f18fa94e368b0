"""Reaching a Kafka cluster: a start that fails fast, with what to fix, when the cluster refuses
the credentials or the TLS handshake (retrying cannot help), and a wait for the group
coordinator of a fresh broker (whose first answer is "not available yet")."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    NotCoordinatorForGroupError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from pipeline.errors import DeploymentError, TransportError
from pipeline.kafka_config import KafkaConfig

__all__ = ["probe", "refusal", "start_client", "wait_for_coordinator"]

logger = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 15.0
_SASL_ERRORS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
_NOT_READY = (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorForGroupError)


def hosts(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a comma-separated bootstrap list (IPv6 in brackets)."""
    pairs = []
    for entry in filter(None, (part.strip() for part in bootstrap.split(","))):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise DeploymentError(f"bootstrap server {entry!r} is not host:port")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        raise DeploymentError("no bootstrap server given")
    return pairs


def refusal(exc: BaseException, where: str, config: KafkaConfig) -> DeploymentError | None:
    """A DeploymentError saying what to fix when ``exc`` (met connecting to ``where``) means the
    cluster refuses this config, None when it is an outage worth retrying."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        fix = (
            f"check ssl.ca.location ({config.ssl_ca_location or 'the system CAs'}) is the CA that signed the "
            "broker's certificate"
        )
        if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            fix = "the certificate does not name this host: connect by a name it lists"
        return DeploymentError(
            f"TLS: the broker at {where} has a certificate this client does not trust ({reason}); {fix} "
            f"[{config.describe()}]"
        )
    closed = isinstance(exc, (ConnectionResetError, EOFError)) or (
        isinstance(exc, KafkaConnectionError) and "closed" in str(exc)
    )
    if isinstance(exc, ssl.SSLError) or (closed and config.uses_tls):
        return DeploymentError(
            f"TLS: the handshake with {where} failed ({type(exc).__name__}: {exc}); does the broker require a "
            "client certificate (ssl.certificate.location) of a CA it trusts, and is that listener TLS "
            f"(security.protocol {config.security_protocol})? [{config.describe()}]"
        )
    if isinstance(exc, _SASL_ERRORS):
        detail = str(exc).strip() or type(exc).__name__
        return DeploymentError(
            f"SASL: the broker at {where} refused {config.sasl_mechanism} authentication as "
            f"{config.sasl_username!r} ({type(exc).__name__}: {detail:.300}); check sasl.username, sasl.password "
            f"and sasl.mechanism [{config.describe()}]"
        )
    return None


async def probe(bootstrap: str, config: KafkaConfig, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Connect (TLS and SASL included) to the bootstrap servers until one accepts, as every
    client will. Raises the DeploymentError of :func:`refusal` when one refuses this config,
    TransportError when none answers."""
    from aiokafka.conn import create_conn

    options = config.client_options()
    failures = []
    for host, port in hosts(bootstrap):
        where = f"{host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, port, client_id="streamserve-probe", request_timeout_ms=int(timeout_s * 1000), **options
                ),
                timeout_s,
            )
        except (OSError, EOFError, KafkaError, asyncio.TimeoutError) as exc:
            refused = refusal(exc, where, config)
            if refused is not None:
                raise refused from None
            hint = ""
            if isinstance(exc, KafkaConnectionError) and "closed" in str(exc) and not config.uses_tls:
                hint = f"; does that listener expect TLS or SASL? (security.protocol is {config.security_protocol})"
            failures.append(f"{where}: {type(exc).__name__}: {exc}{hint}")
            continue
        conn.close()
        return
    raise TransportError(f"no Kafka broker answers at {bootstrap} ({'; '.join(failures)})")


async def start_client(client: Any, bootstrap: str, config: KafkaConfig, what: str = "Kafka client") -> None:
    """``await client.start()`` for an aiokafka producer, consumer or admin client; when it
    cannot bootstrap, a DeploymentError saying why (refused credentials or TLS: see
    :func:`refusal`; else no broker answering). A secured config is probed first, so a refusal
    is reported once, here, not also logged by the Kafka client."""
    if config.uses_tls or config.uses_sasl:
        try:
            await probe(bootstrap, config)
        except TransportError:
            pass  # the client's own start reports it
    try:
        await client.start()
    except KafkaConnectionError as exc:
        await _close(client)
        try:
            await probe(bootstrap, config)
        except TransportError as down:
            raise DeploymentError(f"{what}: {down}") from None
        raise DeploymentError(f"{what}: cannot connect to Kafka at {bootstrap}: {exc}") from None
    except BaseException:
        await _close(client)
        raise


async def _close(client: Any) -> None:
    stop = getattr(client, "stop", None) or client.close
    try:
        await stop()
    except Exception as exc:  # a client that never started may not stop cleanly
        logger.debug("closing a client that failed to start: %r", exc)


async def wait_for_coordinator(
    bootstrap: str, config: KafkaConfig, groups: Iterable[str], *, timeout_s: float = 30.0
) -> bool:
    """Wait until the cluster names a coordinator for every group (a fresh broker creates its
    offsets topic first), so consumers join without errors; whether it did within ``timeout_s``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="streamserve-coordinator", **config.client_options()
    )
    await start_client(admin, bootstrap, config, "admin client")
    deadline, told = time.monotonic() + timeout_s, False
    try:
        for group in groups:
            while True:
                try:
                    await admin.find_coordinator(group)
                    break
                except _NOT_READY:
                    if not told:
                        logger.info("waiting for the group coordinator of %s (a fresh broker starts it)", bootstrap)
                        told = True
                    if time.monotonic() > deadline:
                        return False
                    await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return True
