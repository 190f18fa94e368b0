"""What the built-in framework model servers share: loading once and keeping why a load failed,
turning a request's inputs into the array the model expects (shape, dtype and NaN checked, and
named in the error), the method choice, and batching that never changes an answer."""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from pipeline.errors import GraphError
from pipeline.protocol import request_inputs
from steps.model import ModelServer
from steps.rows import to_rows

logger = logging.getLogger(__name__)
_V2_TYPES = {"f": "FP", "i": "INT", "u": "UINT"}
_LOG_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ")


class FrameworkModelServer(ModelServer):
    """Base of the built-in servers (XGBoost, LightGBM, ONNX, PyTorch): a subclass implements
    :meth:`load_model` and :meth:`forward`.

    Class arguments: ``method`` (``"predict"``: labels or values; ``"predict_proba"``: one
    probability per class), ``max_batch_rows`` (the most rows one framework call gets),
    ``allow_nan`` (NaN as a missing value; infinities are always refused) and ``example_inputs``
    (rows the load-time batching check predicts instead of random ones).

    A model that cannot load (no file, a corrupt one, one of another kind, a missing framework)
    does not stop the worker: the reason is logged, ``ready`` answers False and each request is
    dead-lettered with it, as a GraphError.

    Batching never changes an answer. Tree frameworks compute each row on its own
    (``row_independent``): their rows are stacked into calls of any size. Matrix frameworks
    (ONNX, PyTorch) do not: BLAS picks other kernels for other batch sizes, so a row's outputs
    differ in their last bits with the number of rows beside it. Their every call therefore has
    exactly ``max_batch_rows`` rows (filled up with copies of the first), whether an event is
    predicted alone or stacked with others, and a check at load predicts probe rows in two orders
    to make sure that a row's output does not depend on its place or its neighbours (if it does,
    each request is predicted alone, as it came). A model with a fixed batch dimension gets
    calls of that size.
    """

    framework: ClassVar[str] = ""  # its name in messages
    extra: ClassVar[str] = ""  # pip install "streamserve[<extra>]"
    row_independent: ClassVar[bool] = False  # the framework computes each row alone: no probe needed
    methods: ClassVar[tuple[str, ...]] = ("predict", "predict_proba")

    method: str = "predict"
    max_batch_rows: int = 16  # XGBoost and LightGBM: 1024
    allow_nan: bool = False
    example_inputs: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        label = self.name or type(self).__name__
        if self.method not in self.methods:
            raise GraphError(f"model {label!r}: method must be one of {', '.join(self.methods)}, not {self.method!r}")
        rows = self.max_batch_rows
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise GraphError(f"model {label!r}: max_batch_rows must be a positive whole number, not {rows!r}")
        self.load_error: GraphError | None = None
        self.input_dtype: np.dtype | None = None  # what rows are cast to; None: any number
        self.row_shape: tuple[int | None, ...] | None = None  # one row's shape; None: not known
        self.fixed_rows: int | None = None  # the model's batch dimension has this fixed size
        self.call_rows: int | None = None  # every framework call gets exactly this many rows (None: as many as given)

    # -- for subclasses -------------------------------------------------------------------
    def load_model(self) -> None:
        """Load the model; set ``model``, ``input_dtype`` and ``row_shape``."""
        raise NotImplementedError

    def forward(self, rows: np.ndarray) -> np.ndarray:
        """The framework's outputs for ``rows``, as ``method`` asks: one per row."""
        raise NotImplementedError

    def require(self, module: str) -> ModuleType:
        """The framework's module, or a GraphError naming the extra that installs it."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise GraphError(
                f"model {self.name!r}: {type(self).__name__} needs {module} ({exc}); "
                f'pip install "streamserve[{self.extra}]"'
            ) from exc

    def model_file(self, suffixes: tuple[str, ...], formats: str) -> Path:
        """The file ``model_path`` names (in a folder: the first file ending with one of
        ``suffixes``), or a GraphError saying what was looked for."""
        return self.find_model_file(suffixes, GraphError, formats)

    def unreadable(self, path: Path, kind: str, exc: BaseException) -> GraphError:
        """The error for a model file the framework refused."""
        return GraphError(f"model {self.name!r}: {str(path)!r} is not {kind} ({type(exc).__name__}: {first_line(exc)})")

    # -- MLRun's hooks ----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether the model loaded, and without an error."""
        return super().ready and self.load_error is None

    def load(self) -> None:
        try:
            self.load_model()
            self.check_batching()
        except Exception as exc:
            if not isinstance(exc, GraphError):
                exc = GraphError(f"model {self.name!r}: cannot load: {first_line(exc)}")
            self.load_error = exc
            logger.error("model %s: %s; its requests are dead-lettered", self.name, exc)

    def validate(self, request: Any, operation: str) -> Any:
        """The request with its inputs as the model's array of rows (a flat data point is one
        row); a StepError names the model and what it expected when they are not."""
        if self.load_error is not None:
            raise GraphError(str(self.load_error))
        return {**request, "inputs": self.to_rows(request_inputs(request))}

    def predict(self, request: dict[str, Any]) -> list:
        rows = request["inputs"]
        if not isinstance(rows, np.ndarray):  # a subclass's validate kept lists
            rows = self.to_rows(rows)
        size = self.call_rows
        if size is None or len(rows) == size:
            return self.forward(rows).tolist()
        parts = [self._call(rows[start : start + size], size) for start in range(0, len(rows), size)]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)).tolist()

    def _call(self, rows: np.ndarray, size: int) -> np.ndarray:
        """The outputs for ``rows`` (at most ``size``) from a call of exactly ``size`` rows."""
        count = len(rows)
        if count < size:
            filled = np.empty((size, *rows.shape[1:]), dtype=rows.dtype)
            filled[:count], filled[count:] = rows, rows[0]
            rows = filled
        return self.forward(rows)[:count]

    def metadata(self) -> dict[str, Any]:
        data = super().metadata()
        data["platform"] = self.framework
        if not data["inputs"] and self.row_shape is not None:
            shape = [-1, *(-1 if size is None else size for size in self.row_shape)]
            dtype = self.input_dtype
            datatype = "BOOL" if dtype is not None and dtype.kind == "b" else None
            if dtype is not None and dtype.kind in _V2_TYPES:
                datatype = f"{_V2_TYPES[dtype.kind]}{dtype.itemsize * 8}"
            data["inputs"] = [{"name": "inputs", "datatype": datatype or "FP64", "shape": shape}]
        return data

    def to_rows(self, inputs: Any) -> np.ndarray:
        """``inputs`` as a C-contiguous array of rows of the model's shape and dtype (see :func:`to_rows`)."""
        return to_rows(inputs, self.name, self.input_dtype, self.row_shape, allow_nan=self.allow_nan)

    # -- batching -----------------------------------------------------------------------------
    def check_batching(self) -> None:
        """Choose the size of every framework call (see the class)."""
        if self.fixed_rows is not None:
            self.batching, self.call_rows = False, self.fixed_rows  # one request per call of that size
            return
        if not self.batching or self.row_independent:
            return
        size = int(self.max_batch_rows or 1)
        problem = None
        try:
            probe = self._probe(size)
            if probe is None:
                problem = "no row shape to make probe rows of (pass example_inputs or the input shape)"
            else:
                outputs, shift, half = self.forward(probe), size // 2 + 1, (size + 1) // 2
                if not _same(self.forward(np.roll(probe, shift, axis=0)), np.roll(outputs, shift, axis=0)):
                    problem = "a row's outputs change with its place in the batch"
                filled = np.concatenate([probe[:half], np.repeat(probe[:1], size - half, axis=0)])
                if not _same(self.forward(filled)[:half], outputs[:half]):
                    problem = "a row's outputs change with the other rows of the batch"
        except Exception as exc:  # the model refuses made-up rows: give it example_inputs
            problem = f"the probe rows failed ({first_line(exc)})"
        if problem is None:
            self.call_rows = size
        else:
            self.batching = False
            logger.warning("model %s: %s: predicting request by request", self.name, problem)

    def _probe(self, limit: int) -> np.ndarray | None:
        if self.example_inputs is not None:
            rows = self.to_rows(self.example_inputs)
            return np.resize(rows, (limit, *rows.shape[1:]))
        if self.row_shape is None or any(size is None for size in self.row_shape):
            return None
        shape = (limit, *self.row_shape)
        generator = np.random.default_rng(0)
        dtype = self.input_dtype or np.dtype(np.float64)
        if dtype.kind == "f":
            return generator.standard_normal(shape).astype(dtype)
        if dtype.kind == "b":
            return generator.integers(0, 2, shape).astype(bool)
        return generator.integers(0, 2, shape).astype(dtype)  # small ints: valid indices for embeddings


def import_class(model: str, target: Any) -> Any:
    """``target``, or the class its import path (``module:Name``) names."""
    if not isinstance(target, str):
        return target
    module_name, _, qualname = target.partition(":") if ":" in target else target.rpartition(".")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise GraphError(f"model {model!r}: cannot import {target!r}: {exc}") from None
    return found


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (frameworks append C++ stack traces), at most 300 characters."""
    text = _LOG_PREFIX.sub("", str(exc).strip())  # XGBoost's "[07:49:52] src/c_api/c_api.cc:1532: "
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    try:
        return bool(np.array_equal(a, b, equal_nan=True))
    except TypeError:  # not numbers: labels
        return bool(np.array_equal(a, b))
