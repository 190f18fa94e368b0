"""Java-style configuration text: ``.properties`` files and the ``sasl.jaas.config`` line of the
Java Kafka client."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import DeploymentError

__all__ = ["jaas_credentials", "read_properties"]

_JAAS = re.compile(r"^\s*([\w.$]+)\s+(?:required|requisite|sufficient|optional)\b(.*?);?\s*$", re.S)
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)')
_LOGIN_MODULES = {"PlainLoginModule": ("PLAIN",), "ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512")}


def read_properties(path: str | Path) -> dict[str, str]:
    """A Java-style properties file as a dict: ``key=value`` or ``key: value`` lines, ``#``/``!``
    comments, a trailing backslash continuing a line (as ``sasl.jaas.config`` often is)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentError(f"cannot read the Kafka client config {str(path)!r}: {exc}") from exc
    props: dict[str, str] = {}
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        match = re.match(r"((?:[^\\=:\s]|\\.)+)\s*[=:\s]\s*(.*)$", line)
        if not match:
            if line.strip():
                props[_unescape(line.strip())] = ""
            continue
        key, value = _unescape(match.group(1)), _unescape(match.group(2))
        if not key:
            raise DeploymentError(f"{path}: line {number}: no key before the '='")
        props[key] = value
    if pending:
        key, _, value = pending.partition("=")
        props[_unescape(key.strip())] = _unescape(value.strip())
    return props


def _unescape(text: str) -> str:
    replace = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}

    def one(match: re.Match[str]) -> str:
        char = match.group(1)
        if char.startswith("u") and len(char) == 5:
            return chr(int(char[1:], 16))
        return replace.get(char, char)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, text)


def jaas_credentials(text: str, mechanism: str, source: str) -> tuple[str, str]:
    """The username and password of a Java ``sasl.jaas.config`` line for PLAIN or SCRAM."""
    match = _JAAS.match(text)
    module = match.group(1).rsplit(".", 1)[-1] if match else ""
    if not match or module not in _LOGIN_MODULES:
        raise DeploymentError(
            f"{source}: sasl.jaas.config must be a PlainLoginModule or ScramLoginModule line such as "
            '`org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";`'
            + (f"; got a {module}" if module else "")
        )
    if mechanism not in _LOGIN_MODULES[module]:
        raise DeploymentError(f"{source}: sasl.jaas.config uses {module}, which does not do sasl.mechanism {mechanism}")
    options = {}
    for name, value in _JAAS_OPTION.findall(match.group(2)):
        options[name] = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
    if "username" not in options or "password" not in options:
        raise DeploymentError(f'{source}: sasl.jaas.config needs username="..." and password="..."')
    return options["username"], options["password"]
