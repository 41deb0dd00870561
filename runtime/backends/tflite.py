"""TFLite/LiteRT backend: ``ai_edge_litert`` first, ``tflite_runtime`` as a fallback import.

Invariants:
- Names: a model with a signature is driven through its signature runner, so the input
  and output names are the signature's (the names the user chose in PyTorch survive);
  a model without one uses its tensor names.
- A quantized input or output (int8/uint8/int16 with a scale) is float32 in ``inputs`` /
  ``outputs``: ``run`` quantizes with that tensor's own scale and zero point
  (``q = clip(round(x / scale) + zero_point)`` to the dtype's range) and dequantizes
  (``(q - zero_point) * scale``). ``raw_inputs`` / ``raw_outputs`` and ``run_raw`` use the
  engine's own integer tensors.
- Dims that are -1 in the model's shape signature are ``None`` in the specs; a feed whose
  shape differs from the allocated one resizes the input and reallocates (the signature
  runner does this itself). Static dims are enforced by the base class: a litert-torch
  model bakes its batch into reshapes, so resizing a static model fails in the delegate.
- ``executed_precision``: ``int8`` when any tensor is int8/uint8 with quantization
  parameters (full int8 and dynamic-range models), else ``fp32``: float16 weights are
  dequantized at load and computed in fp32 on the CPU; ``weight_precision`` (in
  ``describe()``) says ``fp16`` for them.
- An interpreter is not thread-safe: one lock serializes every call on a session.
"""

from __future__ import annotations

import threading

import numpy as np

from ..base import Session
from ..errors import EngineNotInstalledError, ModelLoadError
from ..nativelog import native_stderr_to_log
from ..spec import ENGINE_EXTRA, Engine, TensorSpec

#: integer tensor types that carry quantization parameters when quantized
_QUANTIZED_TYPES = ("int8", "uint8", "int16")

#: signature used when a model has several (the converters' default name)
_DEFAULT_SIGNATURE = "serving_default"


def _interpreter_class():
    """The Interpreter class of the first installed LiteRT/TFLite package.

    Raises:
        EngineNotInstalledError: neither ``ai_edge_litert`` nor ``tflite_runtime`` imports.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError as first:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as second:
            raise EngineNotInstalledError(
                Engine.TFLITE.value, ENGINE_EXTRA[Engine.TFLITE],
                f"ai_edge_litert: {first}; tflite_runtime: {second}",
            ) from second
        return Interpreter


class _Quant:
    """One tensor's affine quantization: per tensor, or per channel along ``axis``."""

    def __init__(self, dtype: str, scales: np.ndarray, zero_points: np.ndarray, axis: int) -> None:
        self.dtype = np.dtype(dtype)
        self.info = np.iinfo(self.dtype)
        self.scales = scales.astype(np.float32)
        self.zero_points = zero_points.astype(np.float32)
        self.axis = axis

    def _params(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        if self.scales.size == 1:
            return self.scales.reshape(()), self.zero_points.reshape(())
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.scales.reshape(shape), self.zero_points.reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        scale, zp = self._params(x.ndim)
        q = np.round(x.astype(np.float32) / scale) + zp
        return np.clip(q, self.info.min, self.info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale, zp = self._params(q.ndim)
        return ((q.astype(np.float32) - zp) * scale).astype(np.float32)


def _quant_of(detail: dict) -> _Quant | None:
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    dtype = np.dtype(detail["dtype"]).name
    if dtype not in _QUANTIZED_TYPES or scales.size == 0 or not np.all(scales > 0):
        return None
    return _Quant(dtype, scales, np.asarray(params["zero_points"]), int(params.get("quantized_dimension", 0)))


def _raw_spec(name: str, detail: dict) -> TensorSpec:
    sig = detail.get("shape_signature")
    dims = sig if sig is not None and len(sig) == len(detail["shape"]) else detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    return TensorSpec(name, np.dtype(detail["dtype"]).name, shape)


class _TensorRunner:
    """Drives a model without a signature by tensor index, like a signature runner."""

    def __init__(self, interpreter) -> None:
        self._it = interpreter
        self._inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        self._outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}

    def get_input_details(self) -> dict[str, dict]:
        return {d["name"]: d for d in self._it.get_input_details()}

    def get_output_details(self) -> dict[str, dict]:
        return {d["name"]: d for d in self._it.get_output_details()}

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        current = {d["index"]: tuple(d["shape"]) for d in self._it.get_input_details()}
        resized = False
        for name, arr in feeds.items():
            index = self._inputs[name]
            if current[index] != arr.shape:
                self._it.resize_tensor_input(index, list(arr.shape))
                resized = True
        if resized:
            self._it.allocate_tensors()
        for name, arr in feeds.items():
            self._it.set_tensor(self._inputs[name], arr)
        self._it.invoke()
        return {name: self._it.get_tensor(index) for name, index in self._outputs.items()}


class TfliteSession(Session):
    engine = Engine.TFLITE

    def _open(self) -> None:
        if self.device.upper() != "CPU":  # delegates (GPU, NPU) are not wired up here
            raise ModelLoadError(f"{self.path}: the tflite backend runs on device 'CPU' only, not {self.device!r}")
        interpreter_cls = _interpreter_class()
        kwargs = {"num_threads": self.threads} if self.threads is not None else {}
        # LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to fd 2 here;
        # it goes through logging instead (one JSON object per line on the agent's stderr)
        with native_stderr_to_log("edgeship.engine.tflite"):
            self._it = interpreter_cls(model_path=str(self.path), **kwargs)
            self._it.allocate_tensors()
        signatures = self._it.get_signature_list()
        if signatures:
            key = _DEFAULT_SIGNATURE if _DEFAULT_SIGNATURE in signatures else sorted(signatures)[0]
            self.signature = key
            self._runner = self._it.get_signature_runner(key)
        else:
            self.signature = None
            self._runner = _TensorRunner(self._it)
        in_details = self._runner.get_input_details()
        out_details = self._runner.get_output_details()
        self.raw_inputs = [_raw_spec(n, d) for n, d in in_details.items()]
        self.raw_outputs = [_raw_spec(n, d) for n, d in out_details.items()]
        self._in_quant = {n: _quant_of(d) for n, d in in_details.items()}
        self._out_quant = {n: _quant_of(d) for n, d in out_details.items()}
        self.inputs = [_caller_spec(s, self._in_quant[s.name]) for s in self.raw_inputs]
        self.outputs = [_caller_spec(s, self._out_quant[s.name]) for s in self.raw_outputs]
        details = self._it.get_tensor_details()
        self.executed_precision = _model_precision(details)
        self.weight_precision = _weight_precision(details)
        self._lock = threading.Lock()

    def _run_raw(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return dict(self._runner(**feeds))

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw_feeds = {
            name: (q.quantize(arr) if (q := self._in_quant[name]) is not None else arr)
            for name, arr in feeds.items()
        }
        raw = self._run_raw(raw_feeds)
        return {
            name: (q.dequantize(arr) if (q := self._out_quant[name]) is not None else arr)
            for name, arr in raw.items()
        }

    def describe(self) -> dict:
        out = super().describe()
        out["signature"] = self.signature
        out["weight_precision"] = self.weight_precision
        return out

    def _close(self) -> None:
        self._runner = None
        self._it = None


def _caller_spec(raw: TensorSpec, quant: _Quant | None) -> TensorSpec:
    return raw if quant is None else TensorSpec(raw.name, "float32", raw.shape)


def _model_precision(tensor_details: list[dict]) -> str:
    """What the CPU executes: int8 when any tensor is quantized int8/uint8, else fp32.

    float16 weights (TFLite's fp16 post-training quantization, MediaPipe models) are stored
    as fp16 and dequantized to fp32 when the model loads: XNNPACK and the reference kernels
    compute in fp32 on the CPU (fp16 arithmetic needs the GPU delegate, which this backend
    does not use). :func:`_weight_precision` tells the storage apart.
    """
    for d in tensor_details:
        if np.dtype(d["dtype"]).name in ("int8", "uint8") and _quant_of(d) is not None:
            return "int8"
    return "fp32"


def _weight_precision(tensor_details: list[dict]) -> str:
    """How the weights are stored: ``int8``, ``fp16`` (dequantized at load) or ``fp32``."""
    dtypes = {np.dtype(d["dtype"]).name for d in tensor_details}
    if any(np.dtype(d["dtype"]).name in ("int8", "uint8") and _quant_of(d) is not None for d in tensor_details):
        return "int8"
    return "fp16" if "float16" in dtypes else "fp32"
