"""Which requests of a batch may share one ``predict`` call: only those whose stacked rows are
exactly what each would give ``predict`` alone (see :class:`steps.model.ModelServer`)."""

from __future__ import annotations

from itertools import chain
from typing import Any

import msgpack
import numpy as np

from pipeline.events import Event

BATCH_FREE = ("inputs", "id")  # fields a stacked request does not carry per event
_BATCH_FREE_KEYS = frozenset(BATCH_FREE)
Pending = tuple[int, Event, Any, Any]  # (index in the batch, event, validated request, its rows)
_NO_FIELDS = msgpack.packb({})


def stack(parts: list[Any]) -> Any:
    """The rows of ``parts`` (of one layout, from :func:`groups`) as one request's inputs."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    stacked = [row for part in parts for row in part]
    return tuple(stacked) if isinstance(parts[0], tuple) else stacked


def groups(pending: list[Pending]) -> list[list[Pending]]:
    """``pending`` requests grouped by the layout of their rows (:func:`_layout`) and by every
    field but ``inputs`` and ``id``, type for type (:func:`_fields`): a group's rows stacked are
    what each request alone would give ``predict``. A request whose rows have no one layout, or
    whose fields are not plain data, is a group of its own."""
    found: dict[tuple[Any, bytes], list[Pending]] = {}
    alone: list[list[Pending]] = []
    for item in pending:
        layout = _layout(item[3])
        fields = _fields(item[2]) if layout is not None else None
        if fields is None:
            alone.append([item])
        else:
            found.setdefault((layout, fields), []).append(item)
    return [*found.values(), *alone]


def _fields(request: dict[str, Any]) -> bytes | None:
    """The request's fields but ``inputs`` and ``id`` as exact bytes (msgpack tells ``1``,
    ``1.0`` and ``True`` apart, and keeps key order), or None for values other than plain data
    (numpy values, tuples, objects): such a request is never stacked with another."""
    if request.keys() <= _BATCH_FREE_KEYS:
        return _NO_FIELDS  # the usual request: inputs, perhaps an id
    try:
        return msgpack.packb(
            {key: value for key, value in request.items() if key not in BATCH_FREE},
            use_bin_type=True,
            strict_types=True,
        )
    except (TypeError, ValueError, OverflowError):
        return None


def _layout(inputs: Any) -> Any:
    """What stacking ``inputs`` with other rows must keep: an array's dtype and row shape, or a
    list's type, row shape and the types of its rows and values (a model that makes an array of
    int rows stacked with float rows would see floats); None for rows of no one shape."""
    if isinstance(inputs, np.ndarray):
        return None if inputs.dtype.kind == "O" else (np.ndarray, inputs.dtype.str, inputs.shape[1:])
    flat = _flat_rows(inputs)
    if flat is not None:
        return flat
    kinds: set[Any] = set()
    shapes = {_shape(row, kinds) for row in inputs}
    if len(shapes) != 1 or None in shapes:
        return None
    return type(inputs), shapes.pop(), frozenset(kinds)


def _flat_rows(inputs: list[Any] | tuple[Any, ...]) -> Any:
    """:func:`_layout` of rows that are all lists of one length holding no list, tuple or array
    (the usual request), found without walking each row's shape; None for anything else."""
    width = len(inputs[0]) if type(inputs[0]) is list else -1
    for row in inputs:
        if type(row) is not list or len(row) != width:
            return None
    values = set(map(type, chain.from_iterable(inputs)))
    if any(issubclass(kind, _NESTED) for kind in values):
        return None
    return type(inputs), (width,), frozenset(values | {list})


def _shape(value: Any, kinds: set[Any]) -> tuple[int, ...] | None:
    """The nested shape of ``value``, adding its type and its values' types (an array's dtype) to
    ``kinds``; None when ragged or an array of objects."""
    kinds.add(type(value))
    if isinstance(value, np.ndarray):
        kinds.add(value.dtype.str)
        return None if value.dtype.kind == "O" else value.shape
    if not isinstance(value, (list, tuple)):
        return ()
    types = set(map(type, value))
    if not any(issubclass(kind, _NESTED) for kind in types):  # a row of scalars, the usual case
        kinds.update(types)
        return (len(value),)
    inner = {_shape(item, kinds) for item in value}
    if len(inner) != 1 or None in inner:
        return None
    return (len(value), *inner.pop())  # type: ignore[misc]


_NESTED = (list, tuple, np.ndarray)


def chunks(group: list[Pending], limit: int | None) -> list[list[Pending]]:
    """``group`` cut into runs of events holding at most ``limit`` rows together (an event with
    more rows than that is a run of its own)."""
    if limit is None:
        return [group]
    chunks: list[list[Pending]] = [[]]
    held = 0
    for item in group:
        size = len(item[3])
        if chunks[-1] and held + size > limit:
            chunks.append([])
            held = 0
        chunks[-1].append(item)
        held += size
    return chunks
