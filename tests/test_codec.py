"""The wire format: request detection, the envelope, numpy arrays, and a fuzzed decoder."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.codec import (
    decode_envelope,
    decode_request,
    decode_response,
    encode_envelope,
    encode_response,
    pack,
    unpack,
)
from pipeline.errors import CodecError
from pipeline.events import Event


def test_numpy_arrays_travel_compactly_and_decode_without_copying():
    array = np.arange(1000, dtype=np.float32).reshape(250, 4)
    data = pack({"inputs": array})
    assert len(data) < array.nbytes + 64  # raw bytes plus a small header, not 1000 floats as msgpack
    decoded = unpack(data)["inputs"]
    assert decoded.dtype == np.float32 and decoded.shape == (250, 4) and not decoded.flags.writeable
    np.testing.assert_array_equal(decoded, array)


def test_envelope_round_trip_keeps_id_path_key_meta_and_body():
    event = Event({"inputs": np.eye(2), "n": np.int64(3)}, "e1", "/v2/models/m/infer", b"k", {}, {"part": "pre"})
    back = decode_envelope(encode_envelope(event), {"model": b"m"})
    assert (back.id, back.path, back.key, back.meta, back.headers) == (
        "e1",
        event.path,
        b"k",
        {"part": "pre"},
        {"model": b"m"},
    )
    np.testing.assert_array_equal(back.body["inputs"], np.eye(2))
    assert back.body["n"] == 3


def test_requests_in_json_or_msgpack_are_detected_and_answered_in_kind():
    body = {"id": "r1", "inputs": [[1, 2]]}
    from_json = decode_request(json.dumps(body).encode(), {}, None)
    from_msgpack = decode_request(msgpack.packb(body), {"path": b"/v2/models/a/infer"}, b"key")
    assert (from_json.id, from_json.meta["format"]) == ("r1", "json")
    assert (from_msgpack.path, from_msgpack.key, from_msgpack.meta["format"]) == (
        "/v2/models/a/infer",
        b"key",
        "msgpack",
    )
    response = {"outputs": np.array([1, 2])}
    assert decode_response(encode_response(response, "json")) == {"outputs": [1, 2]}
    assert decode_response(encode_response(response, "msgpack")) == {"outputs": [1, 2]}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty request"),
        (b"\xc1", "neither valid JSON nor msgpack"),
        (b"{nope", "neither valid JSON nor msgpack"),
        (b'"text"', "must be a JSON object or msgpack map, got str"),
        (msgpack.packb([1, 2]), "must be a JSON object or msgpack map, got list"),
    ],
)
def test_bad_requests_raise_a_codec_error_that_says_why(data, reason):
    with pytest.raises(CodecError, match=reason):
        decode_request(data, {}, None)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_an_event_or_a_codec_error(data):
    for decode in (lambda: decode_request(data, {}, None), lambda: decode_envelope(data, {})):
        try:
            event = decode()
        except CodecError:
            continue
        assert isinstance(event, Event)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_any_json_object_round_trips_through_request_and_envelope(body):
    for fmt in ("json", "msgpack"):
        event = decode_request(encode_response(body, fmt), {}, None)
        assert event.body == body
        assert decode_envelope(encode_envelope(event), {}).body == body
