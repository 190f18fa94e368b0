"""ONNXModelServer: an ONNX model run by onnxruntime, its inputs checked against its signature."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import GraphError
from steps.frameworks import FrameworkModelServer

FORMATS = "an ONNX model file (.onnx)"
TENSOR_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
PROBABILITY_OUTPUTS = ("probabilities", "output_probability")  # skl2onnx's names (without and with ZipMap)


class ONNXModelServer(FrameworkModelServer):
    """Serves an ONNX model with onnxruntime. The model takes one input tensor whose first
    dimension is the batch; rows are checked against its element type and the rest of its
    shape, from the model's own signature.

    ``method="predict"`` answers with the model's first output (skl2onnx: ``label`` or
    ``variable``), ``"predict_proba"`` with ``probabilities`` / ``output_probability`` (a ZipMap's
    dicts become rows in class order), else the second output; ``output`` names one outright.
    ``threads`` is onnxruntime's intra-op thread count (default 1: a worker serves many small
    requests; 0 is onnxruntime's choice, every core), ``providers`` its execution providers
    (default ``["CPUExecutionProvider"]``; one that this onnxruntime lacks is an error). The rows
    of a batch's requests go to the model as one tensor of ``max_batch_rows`` (16) rows per call,
    filled up when fewer, so that no answer depends on the batch (see FrameworkModelServer); a
    model whose batch dimension is fixed gets calls of that size.
    """

    framework = "onnxruntime"
    extra = "onnx"
    output: str | None = None
    threads: int = 1
    providers: list[str] | None = None

    def load_model(self) -> None:
        ort = self.require("onnxruntime")
        providers = list(self.providers or ["CPUExecutionProvider"])
        missing = [name for name in providers if name not in ort.get_available_providers()]
        if missing:
            raise GraphError(
                f"model {self.name!r}: onnxruntime {ort.__version__} has no {', '.join(missing)} "
                f"(it has {', '.join(ort.get_available_providers())})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        source, path = self.model, None
        if source is None:
            path = self.model_file((".onnx", ".ort"), FORMATS)
            source = str(path)
        elif hasattr(source, "SerializeToString"):  # an onnx.ModelProto
            source = source.SerializeToString()
        try:
            session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:
            if path is not None:
                raise self.unreadable(path, "an ONNX model onnxruntime can load", exc) from None
            raise GraphError(f"model {self.name!r}: onnxruntime cannot load the model given: {exc}") from None
        self.model = self._session = session
        self._signature(session)

    def _signature(self, session: Any) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(f"{i.name} {i.type}" for i in inputs)
            raise GraphError(f"model {self.name!r}: the ONNX server feeds one input tensor; this model has {names}")
        tensor = inputs[0]
        if tensor.type not in TENSOR_TYPES:
            raise GraphError(
                f"model {self.name!r}: input {tensor.name!r} is {tensor.type}; the ONNX server feeds "
                f"{', '.join(TENSOR_TYPES)}"
            )
        shape = [size if isinstance(size, int) and size >= 0 else None for size in tensor.shape]
        if not shape:
            raise GraphError(f"model {self.name!r}: input {tensor.name!r} is a scalar; the ONNX server feeds rows")
        self._input, self.input_dtype = tensor.name, np.dtype(TENSOR_TYPES[tensor.type])
        self.row_shape = tuple(shape[1:])
        self.fixed_rows = shape[0]
        outputs = session.get_outputs()
        names = [o.name for o in outputs]
        if self.output is not None:
            if self.output not in names:
                raise GraphError(f"model {self.name!r}: no output {self.output!r}; the model has {', '.join(names)}")
            chosen = self.output
        elif self.method == "predict":
            chosen = names[0]
        else:
            named = [name for name in names if name in PROBABILITY_OUTPUTS]
            if not named and len(names) < 2:
                raise GraphError(
                    f"model {self.name!r}: method='predict_proba' needs a probabilities output; the model has "
                    f"only {names[0]!r} (or name one with output=...)"
                )
            chosen = named[0] if named else names[1]
        self._output = chosen
        self._zipmap = next(o.type for o in outputs if o.name == chosen).startswith("seq(map(")

    def forward(self, rows: np.ndarray) -> np.ndarray:
        outputs = self._session.run([self._output], {self._input: rows})[0]
        if self._zipmap:  # a list of {class: probability}: rows in class order
            classes = sorted(outputs[0]) if outputs else []
            return np.array([[row[label] for label in classes] for row in outputs])
        return outputs
