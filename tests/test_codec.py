"""The wire format: request detection, the envelope, numpy arrays, and a decoder whose only
failure is CodecError, fuzzed with structured hostile input."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import hostile_headers, hostile_keys, hostile_values, json_bodies, record

from pipeline.codec import (
    MAX_DEPTH,
    MAX_REQUEST_BYTES,
    decode_envelope,
    decode_request,
    decode_response,
    encode_envelope,
    encode_response,
    origin_of,
    pack,
    unpack,
)
from pipeline.errors import CodecError
from pipeline.events import Event


def test_numpy_arrays_travel_compactly_and_decode_writable():
    array = np.arange(1000, dtype=np.float32).reshape(250, 4)
    data = pack({"inputs": array})
    assert len(data) < array.nbytes + 64  # raw bytes plus a small header, not 1000 floats as msgpack
    decoded = unpack(data)["inputs"]
    assert decoded.dtype == np.float32 and decoded.shape == (250, 4)
    decoded *= 2  # in-place numpy steps work on decoded arrays, as on the mock server
    np.testing.assert_array_equal(decoded, array * 2)


def test_envelope_round_trip_keeps_identity_path_key_meta_origin_and_body():
    request = record(b'{"inputs": [[1]]}', key=b"k", headers=[("model", b"m"), ("trace", None)], offset=7)
    entered = decode_request(request)
    event = entered.derive({"inputs": np.eye(2), "n": np.int64(3)})
    event.meta["part"] = "pre"
    back = decode_envelope(encode_envelope(event), {"model": b"m"})
    assert (back.uid, back.id, back.path, back.key, back.meta, back.headers) == (
        entered.uid,
        entered.id,
        "/",
        b"k",
        {"format": "json", "part": "pre"},
        {"model": b"m"},
    )
    assert origin_of(back) == entered.origin and back.origin.value == request.value and back.origin.offset == 7
    np.testing.assert_array_equal(back.body["inputs"], np.eye(2))
    assert back.body["n"] == 3


def test_requests_in_json_or_msgpack_are_detected_and_answered_in_kind():
    body = {"id": "r1", "inputs": [[1, 2]]}
    from_json = decode_request(record(json.dumps(body).encode()))
    from_msgpack = decode_request(record(msgpack.packb(body), key=b"key", headers=[("path", b"/v2/models/a/infer")]))
    assert (from_json.id, from_json.meta["format"]) == ("r1", "json")
    assert (from_msgpack.path, from_msgpack.key, from_msgpack.meta["format"]) == (
        "/v2/models/a/infer",
        b"key",
        "msgpack",
    )
    response = {"outputs": np.array([1, 2])}
    assert decode_response(encode_response(response, "json")) == {"outputs": [1, 2]}
    assert decode_response(encode_response(response, "msgpack")) == {"outputs": [1, 2]}


def test_identity_is_the_record_and_the_client_id_may_repeat():
    first = decode_request(record(b'{"id": "same", "inputs": [1]}', offset=1))
    again = decode_request(record(b'{"id": "same", "inputs": [1]}', offset=2))
    redelivered = decode_request(record(b'{"id": "same", "inputs": [1]}', offset=1))
    assert first.id == again.id == "same"
    assert first.uid != again.uid and first.uid == redelivered.uid
    anonymous = decode_request(record(b'{"inputs": [1]}', offset=3))
    assert anonymous.id == decode_request(record(b'{"inputs": [1]}', offset=3)).id  # a redelivery answers alike


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty request"),
        (b"\xc1", "neither valid JSON nor msgpack"),
        (b"{nope", "neither valid JSON nor msgpack"),
        (b"\xc7\x00\x01", "neither valid JSON nor msgpack"),  # truncated msgpack ext
        (b"[" * 50_000 + b"]" * 50_000, f"nested deeper than {MAX_DEPTH} levels"),
        (b"\x91" * 3_000 + b"\xc0", f"nested deeper than {MAX_DEPTH} levels"),
        (b'{"a":' * 70 + b"1" + b"}" * 70, f"nested deeper than {MAX_DEPTH} levels"),
        (msgpack.packb({"x": msgpack.ExtType(5, b"zz")}), "unknown msgpack extension type 5"),
        (msgpack.packb({"x": msgpack.ExtType(1, msgpack.packb(("|O", [1])) + b"12345678")}), "not a number"),
    ],
)
def test_bad_requests_raise_a_codec_error_that_says_why(data, reason):
    with pytest.raises(CodecError, match=reason):
        decode_request(record(data))


def test_any_json_value_is_a_body_as_in_mlrun_flows():
    assert decode_request(record(b'"text"')).body == "text"
    assert decode_request(record(msgpack.packb([1, 2]))).body == [1, 2]


def test_a_request_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(CodecError, match="over the"):
        decode_request(record(b"{" + b" " * MAX_REQUEST_BYTES + b"}"))


def test_nesting_up_to_the_limit_is_accepted():
    deep = {"inputs": [1]}
    for _ in range(MAX_DEPTH - 2):
        deep = {"a": deep}
    assert decode_request(record(json.dumps(deep).encode())).body == deep


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_values(), hostile_keys(), hostile_headers())
def test_any_record_decodes_to_an_event_or_a_codec_error(value, key, headers):
    try:
        event = decode_request(record(value, key=key, headers=headers))
    except CodecError:
        return
    assert isinstance(event, Event) and event.origin.value == value
    assert decode_envelope(encode_envelope(event), {}).uid == event.uid


@settings(max_examples=300, deadline=None)
@given(hostile_values())
def test_any_bytes_as_an_envelope_decode_to_an_event_or_a_codec_error(value):
    try:
        assert isinstance(decode_envelope(value, {}), Event)
    except CodecError:
        pass


@settings(max_examples=200, deadline=None)
@given(json_bodies(), st.sampled_from(["json", "msgpack"]))
def test_any_json_object_round_trips_through_request_and_envelope(body, fmt):
    event = decode_request(record(encode_response(body, fmt)))
    assert event.body == body
    assert decode_envelope(encode_envelope(event), {}).body == body
