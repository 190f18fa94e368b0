"""Bytes on the wire: requests (JSON or msgpack, detected per message), the step envelope,
responses. The only place bytes become events and back; its only failure is CodecError.

Between steps an event travels as one msgpack array (see :func:`encode_envelope`) in which
numpy arrays are a msgpack extension (dtype, shape, raw bytes). Responses are written in the
format their request came in, as plain data.

Limits on what a request may be: at most ``MAX_REQUEST_BYTES`` bytes, nested at most
``MAX_DEPTH`` levels, numpy extension values of numbers, booleans or strings only.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from typing import Any, Literal, Protocol

import msgpack
import numpy as np

from pipeline.errors import CodecError
from pipeline.events import Event, Origin

Format = Literal["json", "msgpack"]
NDARRAY = 1  # msgpack extension code of a numpy array
ENVELOPE_VERSION = 1
MAX_DEPTH = 64
MAX_REQUEST_BYTES = 16 * 1024 * 1024
_ARRAY_KINDS = frozenset("biufcSU")  # numbers, booleans, bytes and text: never objects or raw memory
_JSON_START = frozenset(b'{["-0123456789tfn \t\r\n')
_OPENERS = (b"[", b"{")


class RecordLike(Protocol):
    """What the codec reads from a consumed record (aiokafka's ConsumerRecord has these)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Any  # a sequence of (name, value) pairs


def _pack_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS:
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
        raise ValueError(f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=len(data))
    unpacker.feed(data)
    dtype_name, shape = unpacker.unpack()
    dtype = np.dtype(str(dtype_name))
    if dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0:
        raise ValueError(f"array dtype {dtype_name!r} is not a number, boolean or string type")
    # A copy, so arrays are writable as everywhere else (in-place numpy steps work deployed).
    return np.frombuffer(data, dtype=dtype, offset=unpacker.tell()).reshape(shape).copy()


def _plain_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a response")


_packers = threading.local()  # a Packer per thread to reuse: packb makes (and frees) a 1 MiB buffer per call
REUSED_BUFFER_BYTES = 1 << 20  # a Packer that packed more is let go: its buffer never shrinks


def pack(value: Any) -> bytes:
    """msgpack bytes, numpy arrays as the compact extension type."""
    packer = getattr(_packers, "free", None) or msgpack.Packer(default=_pack_default, use_bin_type=True)
    _packers.free = None  # a pack inside this one (a __del__, an items() override) takes a Packer of its own
    data = packer.pack(value)
    if len(data) <= REUSED_BUFFER_BYTES:
        _packers.free = packer
    return data


def unpack(data: bytes) -> Any:
    """The value :func:`pack` encoded."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def as_delivered(value: Any) -> Any:
    """``value`` as a hop between steps delivers it: a private copy, numbers for numpy scalars,
    lists for tuples; raises what :func:`pack` raises for a value the wire cannot carry."""
    return unpack(pack(value))


def detect(data: bytes) -> Format:
    """``"json"`` if the bytes start like a JSON value, else ``"msgpack"``."""
    return "json" if data[:1] and data[0] in _JSON_START else "msgpack"


def decode_request(record: RecordLike) -> Event:
    """An event from a request record (JSON or msgpack; a V2 request is an object), or a
    :class:`CodecError` saying what is wrong with the value, key or headers."""
    data = record.value
    if not data:
        raise CodecError("empty request: expected a JSON object or msgpack map with 'inputs'")
    if len(data) > MAX_REQUEST_BYTES:
        raise CodecError(f"request of {len(data)} bytes is over the {MAX_REQUEST_BYTES}-byte limit")
    fmt = detect(data)
    try:
        body = _json_loads(data) if fmt == "json" else unpack(data)
        if fmt == "msgpack" or sum(map(data.count, _OPENERS)) > MAX_DEPTH:
            _check_depth(body)
    except CodecError:
        raise
    except (RecursionError, msgpack.StackError) as exc:
        raise CodecError(f"request is nested deeper than {MAX_DEPTH} levels") from exc
    except Exception as exc:  # every parser failure, whatever its type, is the request's fault
        raise CodecError(
            f"request is neither valid JSON nor msgpack ({fmt} parse failed: {type(exc).__name__}: {exc!s:.200})"
        ) from exc
    return request_event(body, fmt, bytes(data), record)


def request_event(body: Any, fmt: Format, data: bytes, record: RecordLike) -> Event:
    """The event of a request whose value ``data`` parsed as ``body`` (the default mock server
    hands bodies over without bytes); a :class:`CodecError` if its key or headers are malformed.

    A body is any JSON value (flow graphs carry lists, numbers, text); V2 model requests are
    objects with ``inputs``, which the model steps check."""
    try:
        pairs = tuple(_header(name, value) for name, value in record.headers) if record.headers else ()
        key = None if record.key is None else bytes(record.key)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"request record has malformed key or headers: {exc}") from exc
    if (not data or b"\\u" in data) and not _utf8_text(body):  # JSON's \udXXX escapes; bodies without bytes
        raise CodecError("request holds text UTF-8 cannot encode (a lone surrogate, as a \\udXXX escape gives)")
    origin = Origin(data, key, pairs, record.partition, record.offset, record.timestamp)
    headers, uid = dict(pairs), origin.uid
    event_id = _client_id(body, headers, uid)
    path = (headers.get("path") or b"/").decode(errors="replace")
    return Event(body, event_id, path, key, headers, {"format": fmt}, uid, origin)


def _header(name: Any, value: Any) -> tuple[str, bytes | None]:
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if not isinstance(name, str):
        raise TypeError(f"header name {name!r:.40} is not text")
    if value is not None and not isinstance(value, bytes):
        value = bytes(value)
    return name, value


def _client_id(body: Any, headers: dict[str, bytes | None], uid: str) -> str:
    """The client's ``id`` (body, else header); without one, an id derived from the record, so a
    redelivered request is answered with the same id."""
    given = body.get("id") if isinstance(body, dict) else None
    if given is not None and given != "":
        return given if isinstance(given, str) else str(given)[:200]
    header = headers.get("id")
    if header:
        return header.decode(errors="replace")
    return hashlib.blake2b(uid.encode(), digest_size=16).hexdigest()


def _utf8_text(body: Any) -> bool:
    """Whether every text in ``body`` (keys too) is text UTF-8 can encode, as every hop needs."""
    try:
        json.dumps(body, ensure_ascii=False, default=repr).encode()
    except UnicodeEncodeError:
        return False
    except (TypeError, ValueError, RecursionError):  # not plain data: the steps' codec says what is wrong
        return True
    return True


def utf8_encodable(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (a str decoded from JSON may hold lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_depth(value: Any) -> None:
    """Raise CodecError if ``value`` nests lists and maps deeper than :data:`MAX_DEPTH`."""
    level: Iterable[Any] = [value]
    for _ in range(MAX_DEPTH + 1):
        inner = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(v for v in item.values() if isinstance(v, (list, dict, tuple)))
            elif isinstance(item, (list, tuple)):
                inner.extend(v for v in item if isinstance(v, (list, dict, tuple)))
        if not inner:
            return
        level = inner
    raise CodecError(f"request is nested deeper than {MAX_DEPTH} levels")


def _json_loads(data: bytes) -> Any:
    try:
        text = data.decode()  # str parses faster than bytes (no encoding detection)
    except UnicodeDecodeError:
        return json.loads(data)  # UTF-16/32 JSON
    return json.loads(text)


def encode_envelope(event: Event) -> bytes:
    """The event as it travels between steps: ``[version, uid, id, path, key, meta, body, origin]``,
    the origin packed once at the first hop and passed on as bytes."""
    origin = event.wire_origin
    if origin is None and event.origin is not None:
        o = event.origin
        origin = event.wire_origin = pack((o.value, o.key, o.headers, o.partition, o.offset, o.timestamp))
    return pack((ENVELOPE_VERSION, event.uid, event.id, event.path, event.key, event.meta, event.body, origin))


def decode_envelope(data: bytes | None, headers: dict[str, bytes | None]) -> Event:
    """The event :func:`encode_envelope` wrote, or a :class:`CodecError`."""
    try:
        version, uid, event_id, path, key, meta, body, origin = unpack(data or b"")
        if version != ENVELOPE_VERSION:
            raise ValueError(f"envelope version {version!r}, expected {ENVELOPE_VERSION}")
        if not (type(uid) is str and type(event_id) is str and type(path) is str and type(meta) is dict):
            raise ValueError("uid, id and path must be text, meta a map")
        if not (key is None or type(key) is bytes) or not (origin is None or type(origin) is bytes):
            raise ValueError("key and origin must be bytes or nil")
    except Exception as exc:
        raise CodecError(f"malformed step envelope: {type(exc).__name__}: {exc!s:.200}") from exc
    return Event(body, event_id, path, key, headers, meta, uid, None, None, origin)


def origin_of(event: Event) -> Origin | None:
    """The request ``event`` came from (decoded from the envelope's bytes the first time it is
    needed: a dead letter); None if it has none or it cannot be read."""
    if event.origin is None and event.wire_origin is not None:
        try:
            value, key, pairs, partition, offset, timestamp = unpack(event.wire_origin)
            event.origin = Origin(value, key, tuple((n, v) for n, v in pairs), partition, offset, timestamp)
        except Exception:
            return None
    return event.origin


def encode_response(body: Any, fmt: Format = "json") -> bytes:
    """A sink record: the body as plain JSON or msgpack (arrays as lists)."""
    if fmt == "json":
        return json.dumps(body, default=_plain_default, separators=(",", ":")).encode()
    return msgpack.packb(body, default=_plain_default, use_bin_type=True)


def decode_response(data: bytes) -> Any:
    """A sink or request record's body, JSON or msgpack."""
    return _json_loads(data) if detect(data) == "json" else unpack(data)
