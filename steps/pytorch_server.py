"""PyTorchModelServer: an exported program, a TorchScript module, or a state dict with its class."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pipeline.errors import GraphError, StepError
from steps.frameworks import FrameworkModelServer, first_line, import_class

FORMATS = (
    "an exported program (torch.export.save, .pt2), a TorchScript module (torch.jit.save), or a state dict "
    "(torch.save) with model_class"
)
OUTPUTS = ("values", "logits", "probabilities")


class PyTorchModelServer(FrameworkModelServer):
    """Serves a PyTorch module under ``torch.inference_mode``: an exported program
    (``torch.export.save``, ``.pt2``: its input's dtype and shape come from its signature; a static
    batch dimension means one request per call), a TorchScript file, or a state dict loaded into
    ``model_class(**model_kwargs)`` (a class or its import path; read with ``weights_only=True``).

    ``outputs`` says what the module returns: ``"values"`` (answered as they are),
    ``"logits"`` or ``"probabilities"`` (per class, last dimension): then ``method="predict"``
    answers the class index and ``"predict_proba"`` the probabilities (a softmax of logits).
    ``device`` is ``"cpu"`` (default), ``"cuda"``/``"cuda:N"`` (an error where CUDA is absent) or
    ``"auto"`` (CUDA when present). Rows are cast to the module's parameter dtype (``dtype``
    overrides); their shape is ``input_shape`` when given, else the first Linear layer's
    in_features (unknown: rows are not checked, and requests are predicted one by one unless
    ``example_inputs`` lets the batching check run). ``threads`` sets torch's intra-op threads
    for the whole process (default 1, as XGBoostModelServer; None leaves torch's setting). The
    rows of a batch's requests go to the module as one tensor of ``max_batch_rows`` (16) rows per
    call, filled up when fewer, so that no answer depends on the batch (see FrameworkModelServer).
    """

    framework = "pytorch"
    extra = "pytorch"
    model_class: Any = None
    model_kwargs: dict[str, Any] | None = None
    outputs: Literal["values", "logits", "probabilities"] = "values"
    device: str = "cpu"
    dtype: str | None = None
    input_shape: list[int] | None = None
    threads: int | None = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.outputs not in OUTPUTS:
            raise GraphError(f"model {self.name!r}: outputs must be one of {', '.join(OUTPUTS)}, not {self.outputs!r}")
        if self.method == "predict_proba" and self.outputs == "values":
            raise GraphError(
                f"model {self.name!r}: method='predict_proba' needs outputs='logits' or 'probabilities' "
                "(what the module returns per class)"
            )

    def load_model(self) -> None:
        torch = self.require("torch")
        self._torch = torch
        self._device = self._pick_device(torch)
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        module = self.model if self.model is not None else self._read(torch)
        signature = None
        if isinstance(module, torch.export.ExportedProgram):
            signature = _exported_input(self.name, module)
            module = module.module()
        elif isinstance(module, torch.nn.Module):
            module = module.eval()
        else:
            raise GraphError(f"model {self.name!r}: got a {type(module).__name__}, not a torch.nn.Module ({FORMATS})")
        self.model = module.to(self._device)
        tensors = [*module.parameters(), *module.buffers()]
        floating = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
        if signature is not None:
            floating = signature.dtype
        self._dtype = getattr(torch, self.dtype) if self.dtype else floating
        self.input_dtype = np.dtype(str(self._dtype).removeprefix("torch."))
        if self.input_shape:
            self.row_shape = tuple(int(size) for size in self.input_shape)
        elif signature is not None:
            sizes = [size if isinstance(size, int) else None for size in signature.shape]
            self.fixed_rows, self.row_shape = sizes[0], tuple(sizes[1:])
        else:
            self.row_shape = _linear_width(module)

    def _pick_device(self, torch: Any) -> Any:
        wanted = str(self.device)
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise GraphError(f"model {self.name!r}: device {self.device!r} asked for, but torch sees no CUDA device")
        try:
            return torch.device(wanted)
        except RuntimeError as exc:
            raise GraphError(f"model {self.name!r}: device {self.device!r}: {exc}") from None

    def _read(self, torch: Any) -> Any:
        path = self.model_file((".pt2", ".pt", ".pth", ".ts", ".torchscript"), FORMATS)
        if path.suffix == ".pt2":
            try:
                return torch.export.load(str(path))
            except Exception as exc:
                raise self.unreadable(path, "an exported program (torch.export.save)", exc) from None
        if self.model_class is None:
            try:
                return torch.jit.load(str(path), map_location=self._device)
            except Exception as exc:
                kind = "a TorchScript module (a state dict needs model_class=...)"
                raise self.unreadable(path, kind, exc) from None
        cls = import_class(self.name, self.model_class)
        try:
            state = torch.load(str(path), map_location=self._device, weights_only=True)
        except Exception as exc:
            raise self.unreadable(path, "a state dict saved with torch.save", exc) from None
        if not isinstance(state, dict):
            raise GraphError(f"model {self.name!r}: {str(path)!r} holds a {type(state).__name__}, not a state dict")
        try:
            module = cls(**(self.model_kwargs or {}))
            module.load_state_dict(state)
        except Exception as exc:
            raise GraphError(
                f"model {self.name!r}: the state dict in {str(path)!r} does not fit {getattr(cls, '__name__', cls)}"
                f"(**{self.model_kwargs or {}}): {first_line(exc)}"
            ) from None
        return module

    def forward(self, rows: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(rows)
            if tensor.device != self._device or tensor.dtype != self._dtype:
                tensor = tensor.to(self._device, self._dtype)
            result = self.model(tensor)
            if not isinstance(result, torch.Tensor):
                raise StepError(f"model {self.name!r} returned a {type(result).__name__}, not one tensor")
            if self.method == "predict_proba" and self.outputs == "logits":
                result = torch.softmax(result, dim=-1)
            outputs = (result if result.device.type == "cpu" else result.cpu()).numpy()
        if self.method == "predict" and self.outputs != "values":
            return outputs.argmax(axis=-1)  # the first of equal maxima, as torch.argmax
        return outputs


def _linear_width(module: Any) -> tuple[int, ...] | None:
    """The row width of a module whose first layer with weights is a Linear one, else None."""
    for layer in module.modules():
        if getattr(layer, "original_name", type(layer).__name__) == "Linear":
            return (int(layer.weight.shape[1]),)
        if next(layer.parameters(recurse=False), None) is not None:
            return None
    return None


def _exported_input(model: str, program: Any) -> Any:
    """The fake tensor of an exported program's one user input (its dtype and shape)."""
    names = program.graph_signature.user_inputs
    if len(names) != 1:
        raise GraphError(f"model {model!r}: the PyTorch server feeds one input tensor; the program takes {names}")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0])
    return node.meta["val"]
