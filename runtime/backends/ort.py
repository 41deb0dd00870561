"""ONNX Runtime backend (CPU provider by default; other providers by name where installed).

``InferenceSession.run`` is thread-safe, so one session serves concurrent callers without a
lock. ``executed_precision`` comes from the model (see :func:`_model_precision`).
"""

from __future__ import annotations

import mmap

import numpy as np

from ..base import Session
from . import import_engine
from ..errors import ModelLoadError
from ..spec import Engine, TensorSpec

# ONNX Runtime reports types as "tensor(float)"; map them to numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    "tensor(bfloat16)": "bfloat16",
    "tensor(string)": "object",  # numpy object arrays of str, what ORT takes and gives for strings
}

#: edgeship device name -> ONNX Runtime execution provider
_PROVIDERS = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "GPU": "CUDAExecutionProvider",
    "TENSORRT": "TensorrtExecutionProvider",
    "OPENVINO": "OpenVINOExecutionProvider",
    "COREML": "CoreMLExecutionProvider",
}


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorSpec(arg.name, _ORT_TYPES.get(arg.type, arg.type), shape)


class OrtSession(Session):
    engine = Engine.ONNXRUNTIME

    def _open(self) -> None:
        ort = import_engine(Engine.ONNXRUNTIME, "onnxruntime")

        provider = _PROVIDERS.get(self.device.upper(), self.device)
        if provider not in ort.get_available_providers():
            raise ModelLoadError(
                f"{self.path}: ONNX Runtime provider {provider!r} is not available here "
                f"(available: {ort.get_available_providers()})"
            )
        so = ort.SessionOptions()
        if self.threads is not None:
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        # ops the chosen provider lacks fall back to the CPU provider, as ORT intends
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        self._sess = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        self.inputs = [_spec(a) for a in self._sess.get_inputs()]
        self.outputs = [_spec(a) for a in self._sess.get_outputs()]
        self._out_names = [o.name for o in self.outputs]
        self.executed_precision = _model_precision(self.path, self.inputs, self._sess)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._sess.run(self._out_names, feeds)
        return dict(zip(self._out_names, res))

    def _close(self) -> None:
        self._sess = None


#: ops whose presence means the graph computes in int8 (QDQ static, dynamic, QOperator)
_INT8_OPS = (
    "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QGemm",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
)

#: key the toolchain stamps into metadata_props with the artifact's precision
PRECISION_METADATA_KEY = "edgeship.precision"


def _model_precision(path, inputs, sess) -> str:
    """What the graph computes in: ORT executes the graph's own types and cannot say itself.

    1. the ``edgeship.precision`` metadata the toolchain stamps (exact);
    2. else ``int8`` when the graph holds a quantizing op (see :func:`_has_int8_ops`);
    3. else ``fp16`` when an input is float16, else ``fp32``. A float16 graph with
       float32 inputs (``keep_io_types``) and no stamp is reported as fp32: telling it apart
       needs the graph, which ORT does not expose and importing onnx here would cost.
    """
    meta = sess.get_modelmeta().custom_metadata_map
    if PRECISION_METADATA_KEY in meta:
        return meta[PRECISION_METADATA_KEY]
    if _has_int8_ops(path):
        return "int8"
    return "fp16" if any(s.dtype == "float16" for s in inputs) else "fp32"


def _has_int8_ops(path) -> bool:
    """Scan the serialized graph for a quantizing op, without onnx.

    A NodeProto's ``op_type`` is protobuf field 4 (length-delimited, tag byte 0x22) followed
    by the length and the name; matching that exact encoding keeps ``DequantizeLinear``
    (weight-only models that compute in float) from matching ``QuantizeLinear``.
    """
    needles = [b"\x22" + bytes([len(op)]) + op.encode() for op in _INT8_OPS]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(n) != -1 for n in needles)
