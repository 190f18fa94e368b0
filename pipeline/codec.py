"""Bytes on the wire: request detection (JSON or msgpack), the step envelope, responses.

Between steps an event travels as one msgpack map ``{id, path, body, meta, key}``
in which numpy arrays are a msgpack extension (dtype, shape, raw bytes) that
decodes without copying. Requests may be JSON or msgpack, detected per message;
responses are written in the format their request came in, as plain data.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgpack
import numpy as np

from pipeline.errors import CodecError
from pipeline.events import Event, new_event_id

Format = Literal["json", "msgpack"]
NDARRAY = 1  # msgpack extension code of a numpy array
_JSON_START = frozenset(b'{["-0123456789tfn \t\r\n')


def _pack_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return value.tolist()
        header = msgpack.packb((value.dtype.str, value.shape))
        return msgpack.ExtType(NDARRAY, header + np.ascontiguousarray(value).tobytes())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} on the wire")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NDARRAY:
        return msgpack.ExtType(code, data)
    unpacker = msgpack.Unpacker(use_list=False, raw=False)
    unpacker.feed(data)
    dtype, shape = unpacker.unpack()
    return np.frombuffer(data, dtype=np.dtype(dtype), offset=unpacker.tell()).reshape(shape)


def _plain_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a response")


def pack(value: Any) -> bytes:
    """msgpack bytes, numpy arrays as the compact extension type."""
    return msgpack.packb(value, default=_pack_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """The value :func:`pack` encoded."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def detect(data: bytes) -> Format:
    """``"json"`` if the bytes start like a JSON value, else ``"msgpack"``."""
    return "json" if data[:1] and data[0] in _JSON_START else "msgpack"


def decode_request(data: bytes | None, headers: dict[str, bytes], key: bytes | None) -> Event:
    """An event from a request record: a V2 body as a JSON object or msgpack map."""
    if not data:
        raise CodecError("empty request: expected a JSON object or msgpack map with 'inputs'")
    fmt = detect(data)
    try:
        body = _json_loads(data) if fmt == "json" else unpack(data)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(
            f"request is neither valid JSON nor msgpack ({fmt} parse failed: {type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(body, dict):
        raise CodecError(f"request must be a JSON object or msgpack map, got {type(body).__name__}")
    event_id = body.get("id") or headers.get("id", b"").decode(errors="replace") or new_event_id()
    path = headers.get("path", b"/").decode(errors="replace") or "/"
    return Event(body, str(event_id), path, key, headers, {"format": fmt})


def _json_loads(data: bytes) -> Any:
    try:
        text = data.decode()  # str parses faster than bytes (no encoding detection)
    except UnicodeDecodeError:
        return json.loads(data)  # UTF-16/32 JSON
    return json.loads(text)


def encode_envelope(event: Event) -> bytes:
    """The event as it travels between steps (without ``meta["src"]``, the reading agent's position)."""
    meta = event.meta
    if "src" in meta:
        meta = {k: v for k, v in meta.items() if k != "src"}
    return pack({"id": event.id, "path": event.path, "body": event.body, "meta": meta, "key": event.key})


def decode_envelope(data: bytes | None, headers: dict[str, bytes]) -> Event:
    """The event :func:`encode_envelope` wrote."""
    try:
        envelope = unpack(data or b"")
        return Event(envelope["body"], envelope["id"], envelope["path"], envelope["key"], headers, envelope["meta"])
    except Exception as exc:
        raise CodecError(f"malformed step envelope: {type(exc).__name__}: {exc}") from exc


def encode_response(body: Any, fmt: Format = "json") -> bytes:
    """A sink record: the body as plain JSON or msgpack (arrays as lists)."""
    if fmt == "json":
        return json.dumps(body, default=_plain_default, separators=(",", ":")).encode()
    return msgpack.packb(body, default=_plain_default, use_bin_type=True)


def decode_response(data: bytes) -> Any:
    """A sink or request record's body, JSON or msgpack."""
    return _json_loads(data) if detect(data) == "json" else unpack(data)
