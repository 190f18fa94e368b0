"""Lines in and out of the command line: requests to produce (checked whole before anything is
sent), and consumed records as JSON lines (like kcat's ``-J``) or text."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.client import Received, Request
from pipeline.codec import Format
from pipeline.errors import StreamServeError

__all__ = ["BadInput", "parse_header", "read_requests", "record_json", "record_text"]

MAX_REPORTED = 10


class BadInput(StreamServeError):
    """Input lines that are not requests: each as ``line N: <reason>``; nothing was sent."""


def parse_header(text: str) -> tuple[str, str]:
    """``K=V`` as a header name and value; ValueError when it is not."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def read_requests(
    lines: Iterable[str],
    *,
    model: str | None = None,
    key: str | None = None,
    key_field: str | None = None,
    headers: Mapping[str, str] | None = None,
    fmt: Format = "json",
) -> list[Request]:
    """Every non-blank line as a :class:`pipeline.client.Request` (a V2 body, a JSON object),
    keyed by ``key`` or the text of the body's ``key_field``, with ``headers`` (and ``model``
    as the model header); BadInput naming each bad line (the first ten) if any line is bad."""
    fixed = {name: value.encode() for name, value in (headers or {}).items()}
    if model:
        fixed["model"] = model.encode()
    requests, problems, bad = [], [], 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            requests.append(_request(line, fixed, key, key_field, fmt))
        except ValueError as exc:
            bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"line {number}: {exc}")
    if bad:
        more = f"\n... and {bad - len(problems)} more" if bad > len(problems) else ""
        raise BadInput("\n".join(problems) + more + f"\n{bad} bad line(s); nothing was sent")
    return requests


def _request(line: str, headers: dict[str, bytes], key: str | None, key_field: str | None, fmt: Format) -> Request:
    try:
        body = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(body, dict):
        raise ValueError(f'expected a JSON object (a V2 request such as {{"inputs": [[1, 2]]}}), got {_kind(body)}')
    if key_field is not None:
        if body.get(key_field) is None:
            raise ValueError(f"no field {key_field!r} for the key (--key-field)")
        value = body[key_field]
        key = value if isinstance(value, str) else json.dumps(value)
    return Request(body, key=None if key is None else key.encode(), headers=dict(headers), format=fmt)


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def record_json(record: Received) -> str:
    """One JSON line: topic, partition, offset, timestamp (ms), key, headers and the decoded body
    (``raw`` instead when the value is not JSON or msgpack)."""
    line: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": _text(record.key),
        "headers": {name: _text(value) for name, value in record.headers.items()},
    }
    if record.body is not None:
        line["body"] = record.body
    else:
        line["raw"] = repr((record.value or b"")[:200])
    return json.dumps(line, default=str)


def record_text(record: Received) -> str:
    """One line for people: where, when, key, id and the body."""
    when = datetime.datetime.fromtimestamp(record.timestamp_ms / 1000, datetime.timezone.utc)
    body = json.dumps(record.body, default=str) if record.body is not None else repr((record.value or b"")[:200])
    key = _text(record.key)
    return (
        f"{record.topic}[{record.partition}]@{record.offset}  {when.isoformat(timespec='milliseconds')}"
        f"  key={key if key is not None else '-'}  {body}"
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="backslashreplace")
