"""Hypothesis strategies for hostile input, the way a broken producer or an attacker sends it:
truncated and deeply nested JSON and msgpack, extension types, forged numpy headers, odd keys
and headers; and a helper that makes a consumed record."""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgpack
from hypothesis import strategies as st

from pipeline.codec import encode_response
from pipeline.runtime.memory import MemoryRecord

SOURCE = "hostile.requests"


def record(
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes | None]] = (),
    topic: str = SOURCE,
    partition: int = 0,
    offset: int = 0,
) -> MemoryRecord:
    """A consumed record as the transport hands it to the loop."""
    return MemoryRecord(topic, partition, offset, 1_700_000_000_000, key, value, tuple(headers))


def json_values(max_leaves: int = 20) -> st.SearchStrategy:
    """JSON-compatible values: nested lists and objects of numbers, text, booleans and nulls."""
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=max_leaves,
    )


def json_bodies() -> st.SearchStrategy:
    """Request-like JSON objects, sometimes with ``inputs`` rows and an ``id``."""
    rows = st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4), max_size=3)
    extra = st.dictionaries(st.text(max_size=8), json_values(), max_size=4)
    return st.builds(
        lambda fields, inputs, ident: {**fields, **({"inputs": inputs} if inputs else {}), **ident},
        extra,
        rows,
        st.one_of(st.just({}), st.builds(lambda i: {"id": i}, json_values(max_leaves=3))),
    )


def _encoded(body: dict, fmt: str) -> bytes:
    return encode_response(body, fmt)  # type: ignore[arg-type]


def truncated_requests() -> st.SearchStrategy[bytes]:
    """Valid JSON or msgpack requests cut short at any byte."""
    return st.builds(
        lambda data, cut: data[: cut % max(1, len(data))],
        st.builds(_encoded, json_bodies(), st.sampled_from(["json", "msgpack"])),
        st.integers(0, 10_000),
    )


def deep_nesting() -> st.SearchStrategy[bytes]:
    """Arrays and maps nested up to thousands of levels, closed or left open."""
    shapes = [
        lambda n: b"[" * n + b"]" * n,
        lambda n: b"[" * n,
        lambda n: b'{"a":' * n + b"1" + b"}" * n,
        lambda n: b'{"inputs":' + b"[" * n + b"]" * n + b"}",
        lambda n: b"\x81\xa1a" * n + b"\xc0",
        lambda n: b"\x91" * n + b"\xc0",
    ]
    return st.builds(lambda shape, n: shape(n), st.sampled_from(shapes), st.integers(1, 5_000))


def extension_types() -> st.SearchStrategy[bytes]:
    """msgpack extension values of any code, and forged numpy array headers."""
    dtypes = st.sampled_from(["<f8", "|O", "V8", "<U3", "|b1", "foo", "(3,)f8", "<M8[s]", "|V0", 7, None])
    shapes = st.lists(st.integers(-3, 10**12), max_size=4) | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=3)
    forged = st.builds(
        lambda dtype, shape, data: msgpack.ExtType(1, msgpack.packb((dtype, shape)) + data),
        dtypes,
        shapes,
        st.binary(max_size=64),
    )
    forged_maps = st.builds(lambda ext: msgpack.packb({"inputs": ext}), forged)
    # ext 8 with any code, -128..127 (msgpack-python packs only 0..127; -1 is the timestamp type)
    raw = st.builds(
        lambda code, data: b"\x81\xa6inputs\xc7" + bytes([len(data), code & 0xFF]) + data,
        st.integers(-128, 127),
        st.binary(max_size=32),
    )
    return forged_maps | raw


def odd_documents() -> st.SearchStrategy[bytes]:
    """Valid-looking documents a parser trips on: huge numbers, NaN, UTF-16, odd map keys."""
    return st.integers(0, len(_ODD) - 1).map(_ODD.__getitem__)


_ODD = [
    b'{"inputs": [' + b"9" * 5_000 + b"]}",
    b'{"inputs": [NaN, Infinity, -Infinity]}',
    json.dumps({"inputs": [[1]]}).encode("utf-16"),
    b"\xef\xbb\xbf" + b'{"inputs": [[1]]}',
    msgpack.packb({1: 2, None: 3}),
    b"\x81\x91\x01\x02",  # a map keyed by an array
    msgpack.packb({"inputs": b"\xff\xfe raw bytes"}),
    msgpack.packb({"id": {"nested": ["id"]}, "inputs": [[1]]}),
    b'{"id": null, "inputs": [[1]]}',
    # JSON escapes that decode to lone surrogates: text no UTF-8 encoder (Kafka's headers, msgpack) takes
    b'{"id": "\\ud800", "inputs": [[1]]}',
    b'{"inputs": [[1]], "note": "\\udfff"}',
    b'{"\\ud800": 1, "inputs": [[1]]}',
    b"{}",
    b"null",
]


def hostile_values() -> st.SearchStrategy[bytes | None]:
    """Every kind of request value above, plus random bytes and an absent value."""
    return st.one_of(
        st.none(),
        st.binary(max_size=300),
        truncated_requests(),
        deep_nesting(),
        extension_types(),
        odd_documents(),
        st.builds(_encoded, json_bodies(), st.sampled_from(["json", "msgpack"])),
    )


def hostile_keys() -> st.SearchStrategy[bytes | None]:
    """No key, empty, binary and invalid UTF-8 keys."""
    return st.one_of(st.none(), st.just(b""), st.just(b"\xff\xfe\x00"), st.binary(max_size=64))


def hostile_headers() -> st.SearchStrategy[list[tuple[str, bytes | None]]]:
    """Null and binary header values, repeated and reserved names (id, path, model, attempts)."""
    names = st.sampled_from(["id", "path", "model", "attempts", "error", "uid", "traceparent"]) | st.text(max_size=12)
    values = st.none() | st.binary(max_size=40) | st.just(b"\xff\xfe") | st.just(b"/v2/models/\xff/infer")
    return st.lists(st.tuples(names, values), max_size=6)
