"""A request's inputs as the array of rows a model takes: its row shape and dtype, no NaN or
infinity unless allowed; anything else a StepError that names the model and what it expected."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from pipeline.errors import StepError

Shape = tuple[int | None, ...]  # one row's shape; None: any size in that dimension


def to_rows(inputs: Any, model: str, dtype: np.dtype | None, row: Shape | None, *, allow_nan: bool) -> np.ndarray:
    """``inputs`` (rows, or one flat data point) as a C-contiguous array of rows of shape ``row``
    and type ``dtype`` (None: not checked). Ints and floats are cast within their kind and up
    (float64 to float32, int to float, never float to int); text is refused; JSON nulls are NaN
    where ``allow_nan``; infinities are refused."""
    try:
        array = inputs if isinstance(inputs, np.ndarray) else np.asarray(inputs)
    except (ValueError, TypeError):
        raise StepError(f"model {model!r} expects {expected(dtype, row)}; the rows differ in length") from None
    if not array.size:
        raise StepError(f"model {model!r} expects {expected(dtype, row)}, got no rows")
    if array.dtype != dtype:
        if array.dtype.kind == "O":
            array = _objects(array, model, dtype, row, allow_nan)
        if array.dtype.kind not in "biuf":
            raise StepError(f"model {model!r} expects {expected(dtype, row)}, got {_kind(array)}")
        if dtype is not None:
            if not _castable(array.dtype, dtype):
                raise StepError(f"model {model!r} expects {expected(dtype, row)}, got {array.dtype} values")
            array = array.astype(dtype)
    if array.ndim == (1 if row is None else len(row)):  # one flat data point
        array = array[np.newaxis]
    if (array.shape[1:] != row and (row is not None or array.ndim < 2)) or not len(array):
        _check_shape(array, model, dtype, row)
    if array.dtype.kind == "f" and not math.isfinite(np.vdot(array, array)):  # NaN, inf (or overflow: look)
        _check_finite(array, model, allow_nan)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def expected(dtype: np.dtype | None, row: Shape | None) -> str:
    """What a model takes, in words: ``rows of 13 float32 values``."""
    kind = "numbers" if dtype is None else f"{dtype} values"
    if row is None:
        return f"rows of {kind}"
    if not row:
        return f"one {kind.removesuffix('s')} per row"
    return f"{_rows(row)}{' of' if len(row) > 1 else ''} {kind}"


def _check_shape(array: np.ndarray, model: str, dtype: np.dtype | None, row: Shape | None) -> None:
    if array.ndim != (max(array.ndim, 2) if row is None else len(row) + 1) or len(array) == 0:
        raise StepError(f"model {model!r} expects {expected(dtype, row)}, got {_shape(array)}")
    if row is not None and any(want is not None and want != got for want, got in zip(row, array.shape[1:])):
        raise StepError(f"model {model!r} expects {expected(dtype, row)}, got {_rows(array.shape[1:])}")


def _check_finite(array: np.ndarray, model: str, allow_nan: bool) -> None:
    bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if bad.any():
        at = [int(i) for i in np.argwhere(bad)[0]]
        what = "NaN" if np.isnan(array[tuple(at)]) else "infinite values"
        hint = " (allow_nan=True takes NaN as missing)" if what == "NaN" else ""
        raise StepError(
            f"model {model!r} does not accept {what}: row {at[0]}, "
            f"{'column' if len(at) == 2 else 'index'} {at[1:] if len(at) > 2 else at[1]}{hint}"
        )


def _objects(array: np.ndarray, model: str, dtype: np.dtype | None, row: Shape | None, allow_nan: bool) -> np.ndarray:
    """Rows holding None (JSON null): NaN when the model takes NaN as missing."""
    values = array.ravel()
    numbers = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
    if allow_nan and numbers:
        return np.array(array.tolist(), dtype=np.float64)
    bad = next((v for v in values if not isinstance(v, (int, float))), values[0])
    raise StepError(f"model {model!r} expects {expected(dtype, row)}, got {_value(bad)}")


@functools.lru_cache(maxsize=256)
def _castable(source: np.dtype, target: np.dtype) -> bool:
    """Whether ``source`` values become ``target`` ones without changing kind (float to int)."""
    return bool(np.can_cast(source, target, "same_kind"))


def _rows(shape: tuple[Any, ...]) -> str:
    if len(shape) == 1:
        return f"rows of {'any number of' if shape[0] is None else shape[0]}"
    return f"rows of shape {_shape_of(shape)}"


def _shape_of(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("any" if size is None else str(size) for size in shape) + ")"


def _shape(array: np.ndarray) -> str:
    return "a scalar" if array.ndim == 0 else "no rows" if array.size == 0 else f"shape {_shape_of(array.shape)}"


def _kind(array: np.ndarray) -> str:
    if array.dtype.kind in "US":
        return f"text ({array.ravel()[0].item()!r:.40})"
    return f"{array.dtype} values"


def _value(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return "null" if value is None else f"{type(value).__name__} {value!r:.40}"
