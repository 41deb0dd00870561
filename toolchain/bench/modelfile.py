"""A single model file as a bench target: checked before any work, its precision read from it.

``edgeship bench model.xml`` must give the answer ``edgeship bench BUILD`` gives for the same
file, so a bare file runs at the precision the same artifact would be deployed with: the
precision ``edgeship compile`` stamped into it (ONNX ``metadata_props`` /
IR ``rt_info/framework`` ``edgeship.precision``), or else the one its graph shows (quantizing
ops / FakeQuantize or low-bit weights -> int8, float16 weights -> fp16, else fp32).

A file that cannot be parsed is bad input (:class:`BenchInputError`, exit 2), found here
before any cell runs or any report is written.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BenchInputError

#: ONNX ops whose presence means the graph computes in int8 (as the runtime's ORT backend reads it)
_ONNX_INT8_OPS = frozenset({
    "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul",
    "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
    "QLinearSigmoid", "QLinearLeakyRelu", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
})
_STAMP = "edgeship.precision"
_LOW_BIT = {"i8", "u8", "i4", "u4"}


def file_precision(path: Path, engine: str) -> str:
    """fp32 | fp16 | int8 for ONNX and OpenVINO IR; ``as-file`` for TFLite (its interpreter
    reports what it executes).

    Raises:
        BenchInputError: the file is not a readable model of its kind (corrupt, truncated,
            IR without its .bin).
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_precision(path)
    if suffix == ".xml":
        return _ir_precision(path)
    if suffix == ".tflite":
        _check_tflite(path)
        return "as-file"
    return "as-file"


def _onnx_precision(path: Path) -> str:
    try:
        import onnx
    except ImportError:  # the toolchain extra brings onnx; without it the engine will judge the file
        return "as-file"
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends: not an ONNX model
        raise BenchInputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not m.graph.node:
        raise BenchInputError(f"{path}: not a readable ONNX model (the graph has no nodes)")
    stamp = next((p.value for p in m.metadata_props if p.key == _STAMP), None)
    if stamp in ("fp32", "fp16", "int8"):
        return stamp
    if any(n.op_type in _ONNX_INT8_OPS for n in m.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
        return "fp16"
    return "fp32"


def _ir_precision(path: Path) -> str:
    import xml.etree.ElementTree as ET

    if not path.with_suffix(".bin").exists():
        raise BenchInputError(f"{path}: OpenVINO IR weights {path.with_suffix('.bin').name} not found next to it")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise BenchInputError(f"{path}: not a readable OpenVINO IR ({e})") from e
    if root.tag != "net":
        raise BenchInputError(f"{path}: not an OpenVINO IR (root element <{root.tag}>, expected <net>)")
    stamp = root.find(f"rt_info/framework/{_STAMP}")
    if stamp is not None and stamp.get("value") in ("fp32", "fp16", "int8"):
        return stamp.get("value")
    layers = root.findall("layers/layer")
    if any(layer.get("type") == "FakeQuantize" for layer in layers):
        return "int8"
    consts = {layer.get("id"): layer.find("data").get("element_type") for layer in layers
              if layer.get("type") == "Const" and layer.find("data") is not None}
    converts = {layer.get("id") for layer in layers if layer.get("type") == "Convert"}
    converted = {e.get("from-layer") for e in root.findall("edges/edge") if e.get("to-layer") in converts}
    if any(consts.get(i) in _LOW_BIT for i in converted):
        return "int8"
    if any(t == "f16" for t in consts.values()):
        return "fp16"
    return "fp32"


def _check_tflite(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise BenchInputError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
