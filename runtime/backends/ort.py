"""ONNX Runtime backend (CPU provider by default; other providers by name where installed)."""

from __future__ import annotations

import numpy as np

from ..base import Session
from ..errors import ModelLoadError
from ..spec import Engine, TensorSpec

# ONNX Runtime reports types as "tensor(float)"; map them to numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    "tensor(bfloat16)": "bfloat16",
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
        import onnxruntime as ort

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
        self._sess = ort.InferenceSession(str(self.path), sess_options=so, providers=[provider])
        self.inputs = [_spec(a) for a in self._sess.get_inputs()]
        self.outputs = [_spec(a) for a in self._sess.get_outputs()]
        self._out_names = [o.name for o in self.outputs]
        self.executed_precision = _model_precision(self.inputs, self._sess)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._sess.run(self._out_names, feeds)
        return dict(zip(self._out_names, res))


def _model_precision(inputs, sess) -> str:
    """ORT executes the graph's own types: report int8/fp16 from the graph, else fp32."""
    try:
        meta = sess.get_modelmeta().custom_metadata_map
        if "edgeship.precision" in meta:
            return meta["edgeship.precision"]
    except Exception:  # metadata is optional; the figure is informative
        pass
    return "fp16" if any(s.dtype == "float16" for s in inputs) else "fp32"
