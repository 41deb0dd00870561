"""OpenVINO backend: IR (.xml + .bin) and .onnx, on any OpenVINO device name.

Invariants:
- The model is compiled once with ``PERFORMANCE_HINT=LATENCY``; ``threads`` becomes
  ``INFERENCE_NUM_THREADS`` and ``precision_hint`` becomes ``INFERENCE_PRECISION_HINT``.
- ``executed_precision`` is what the compiled model reports (an FP32 IR runs in bf16 on a
  CPU with bf16 support unless the hint says f32), or ``int8`` when the IR itself is
  quantized (FakeQuantize nodes or int8/uint8 weight constants).
- The hot path reuses infer requests and wraps caller arrays without copying
  (``ov.Tensor(array, shared_memory=True)``); ``infer(dict)`` copies every input.
- Thread-safety: each request is used by one thread at a time. Requests come from a small
  pool sized by the compiled model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` (1 under the
  LATENCY hint, so concurrent callers queue on one request, which is what the device
  could do anyway). Outputs are copied out before the request goes back to the pool.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from ..base import Session
from . import import_engine
from ..errors import ModelLoadError
from ..spec import Engine, TensorSpec

#: edgeship precision hint -> OpenVINO INFERENCE_PRECISION_HINT value
_HINTS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}

#: OpenVINO element type name -> numpy dtype name
_OV_TYPES = {
    "f32": "float32", "f16": "float16", "f64": "float64", "bf16": "bfloat16",
    "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8",
    "u64": "uint64", "u32": "uint32", "u16": "uint16", "u8": "uint8", "boolean": "bool",
}

#: compiled-model precision property -> edgeship precision name
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}

#: devices that route to other devices; their suffix lists real devices
_VIRTUAL_DEVICES = {"AUTO", "MULTI", "HETERO", "BATCH"}

#: low-bit weight types that mark a weight-compressed IR
_QUANT_WEIGHT_TYPES = {"i8", "u8", "i4", "u4"}


class OpenVinoSession(Session):
    engine = Engine.OPENVINO

    def _open(self) -> None:
        self._ov = ov = import_engine(Engine.OPENVINO, "openvino")
        core = ov.Core()
        device = self.device.upper()  # OpenVINO device names are upper case
        _check_device(self.path, device, core.available_devices)
        _check_files(self.path)
        model = core.read_model(str(self.path))
        quantized = _is_quantized(model)
        compiled = core.compile_model(model, device, self._config())
        self._compiled = compiled
        self.inputs = [_spec(p, i, "input") for i, p in enumerate(compiled.inputs)]
        self.outputs = [_spec(p, i, "output") for i, p in enumerate(compiled.outputs)]
        self._in_ports = {s.name: p for s, p in zip(self.inputs, compiled.inputs)}
        self._out_names = [s.name for s in self.outputs]
        self.executed_precision = "int8" if quantized else _compiled_precision(compiled)
        self._pool_size = max(1, _int_property(compiled, "OPTIMAL_NUMBER_OF_INFER_REQUESTS", 1))
        self._pool_lock = threading.Lock()
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._idle.put(compiled.create_infer_request())  # fail at load, not at first call
        self._created = 1

    def _config(self) -> dict[str, str]:
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = str(self.threads)
        if self.precision_hint is not None:
            cfg["INFERENCE_PRECISION_HINT"] = _HINTS[self.precision_hint]
        return cfg

    def _acquire(self):
        """An idle request, a new one while the pool is below its size, else wait for one."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._pool_lock:
            if self._created < self._pool_size:
                self._created += 1
                return self._compiled.create_infer_request()
        return self._idle.get()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._acquire()
        try:
            for name, arr in feeds.items():
                if not arr.flags.writeable:  # OpenVINO only shares writeable buffers
                    arr = arr.copy()
                request.set_tensor(self._in_ports[name], self._ov.Tensor(arr, shared_memory=True))
            request.infer()
            # copy: the request's output buffers are reused by the next call
            return {
                name: np.array(request.get_output_tensor(i).data, copy=True)
                for i, name in enumerate(self._out_names)
            }
        finally:
            self._idle.put(request)

    def _close(self) -> None:
        self._idle = queue.LifoQueue()
        self._in_ports = {}
        self._compiled = None


def _check_device(path, device: str, available: list[str]) -> None:
    """Refuse a device OpenVINO does not have here, listing the ones it has.

    Raises:
        ModelLoadError: ``device`` (or a device named inside AUTO:/MULTI:/HETERO:) is unknown.
    """
    head, _, rest = device.partition(":")
    names = [d for d in rest.split(",") if d] if head.upper() in _VIRTUAL_DEVICES else [device]
    families = {d.split(".")[0] for d in available}
    for name in names:
        if name not in available and name.split(".")[0] not in families and name not in families:
            raise ModelLoadError(
                f"{path}: OpenVINO device {name!r} is not available here "
                f"(available: {available}; AUTO picks one)"
            )


def _check_files(path) -> None:
    """An IR needs its .bin weights next to the .xml; say so before OpenVINO's error does."""
    suffix = path.suffix.lower()
    if suffix == ".xml":
        if not path.with_suffix(".bin").exists():
            raise ModelLoadError(f"{path}: OpenVINO IR weights {path.with_suffix('.bin').name} not found next to it")
    elif suffix != ".onnx":
        raise ModelLoadError(f"{path}: OpenVINO opens an IR (.xml + .bin) or an .onnx file, not {suffix!r}")


def _spec(port, index: int, kind: str) -> TensorSpec:
    try:
        name = port.get_any_name()
    except RuntimeError:  # an unnamed port (possible in hand-built IR)
        name = f"{kind}{index}"
    etype = port.get_element_type().get_type_name()
    shape = tuple(_dim(d) for d in port.get_partial_shape())
    return TensorSpec(name, _OV_TYPES.get(etype, etype), shape)


def _dim(d):
    if d.is_static:
        return d.get_length()
    return None  # OpenVINO keeps no dim names (ONNX symbolic names are lost on conversion)


def _is_quantized(model) -> bool:
    """FakeQuantize nodes (NNCF/POT int8) or low-bit weight constants (weight compression)."""
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant" and op.get_output_element_type(0).get_type_name() in _QUANT_WEIGHT_TYPES:
            if any(t.get_node().get_type_name() == "Convert" for t in op.output(0).get_target_inputs()):
                return True
    return False


def _compiled_precision(compiled) -> str:
    """The precision the compiled model runs in. Virtual devices (AUTO, MULTI) do not report
    it themselves; their DEVICE_PROPERTIES hold each real device's value."""
    supported = compiled.get_property("SUPPORTED_PROPERTIES")
    if "INFERENCE_PRECISION_HINT" in supported:
        return _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if "DEVICE_PROPERTIES" in supported:
        per_device = {
            dev: _precision_name(props["INFERENCE_PRECISION_HINT"])
            for dev, props in compiled.get_property("DEVICE_PROPERTIES").items()
            if "INFERENCE_PRECISION_HINT" in props
        }
        if len(set(per_device.values())) == 1:
            return next(iter(per_device.values()))
        if per_device:
            return ",".join(f"{dev}:{p}" for dev, p in sorted(per_device.items()))
    return "unknown"


def _precision_name(value) -> str:
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return _PRECISION_NAMES.get(name, name)


def _int_property(compiled, key: str, default: int) -> int:
    if key not in compiled.get_property("SUPPORTED_PROPERTIES"):
        return default
    return int(compiled.get_property(key))
