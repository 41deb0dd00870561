"""Fixtures for bench tests: tiny real models (ONNX, ORT-quantized ONNX, OpenVINO IR) and a
hand-written build directory following docs/design.md (manifest schema_version 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.fsutil import file_entry, sha256_file

def make_onnx(path: Path, *, batch="batch", features: int = 32, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, 64)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "W2")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


def fidelity_block(metric: str, value: float, *, higher_is_better: bool, budget=None, passed=True) -> dict:
    """A manifest ``verification.fidelity`` block as the compile side writes it (docs/design.md)."""
    return {"metric": metric, "value": value, "higher_is_better": higher_is_better, "budget": budget,
            "passed": passed, "per_output": {"logits": {"metric": metric, "value": value}}}


def _artifact(build: Path, aid: str, engine: str, precision: str, model_file: str, *, status="ok",
              drop=None, agreement=1.0, fidelity: dict | None = None) -> dict:
    d = build / aid
    files = [file_entry(d, p) for p in sorted(d.iterdir())] if d.exists() else []
    ver = {"samples": 32, "accuracy_drop_pts": drop, "top1_agreement": agreement,
           "cosine_min": 0.999, "passed": status == "ok"}
    if fidelity is not None:
        ver.update(task="classify", fidelity=fidelity)
    return {"id": aid, "engine": engine, "precision": precision, "status": status, "error": None,
            "dir": aid, "model_file": model_file, "files": files,
            "size_bytes": sum(f["bytes"] for f in files), "verification": ver}


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    """A build with ORT fp32, ORT int8-dynamic (really quantized), OpenVINO fp32 IR, an ORT
    fixed-batch artifact, an artifact whose file is missing, one that failed its fidelity gate
    (gate_failed) and a failed one. Two artifacts carry the compile side's fidelity block, the
    others only the older raw figures."""
    import openvino as ov
    from onnxruntime.quantization import quantize_dynamic

    b = tmp_path_factory.mktemp("build") / "tiny"
    ref = make_onnx(b / "reference" / "model.onnx")
    make_onnx(b / "onnxruntime-fp32" / "model.onnx")
    (b / "onnxruntime-int8-dynamic").mkdir()
    quantize_dynamic(str(ref), str(b / "onnxruntime-int8-dynamic" / "model.onnx"))
    (b / "onnxruntime-int8-gated").mkdir()
    quantize_dynamic(str(ref), str(b / "onnxruntime-int8-gated" / "model.onnx"))
    ov.save_model(ov.convert_model(str(ref)), str(b / "openvino-fp32" / "model.xml"), compress_to_fp16=False)
    make_onnx(b / "onnxruntime-fixed" / "model.onnx", batch=1)
    (b / "onnxruntime-missing").mkdir()
    (b / "data").mkdir()
    rng = np.random.default_rng(1)
    np.savez(b / "data" / "validation.npz", x=rng.standard_normal((24, 32)).astype(np.float32),
             __labels__=rng.integers(0, 10, 24))
    arts = [
        _artifact(b, "onnxruntime-fp32", "onnxruntime", "fp32", "model.onnx", drop=0.0,
                  fidelity=fidelity_block("accuracy_drop_pts", 0.0, higher_is_better=False, budget=1.0)),
        _artifact(b, "onnxruntime-int8-dynamic", "onnxruntime", "int8-dynamic", "model.onnx", drop=0.4),
        _artifact(b, "onnxruntime-int8-gated", "onnxruntime", "int8", "model.onnx", drop=0.2, status="gate_failed",
                  fidelity=fidelity_block("accuracy_drop_pts", 0.2, higher_is_better=False, budget=0.1,
                                          passed=False)),
        _artifact(b, "openvino-fp32", "openvino", "fp32", "model.xml", drop=0.0),
        _artifact(b, "onnxruntime-fixed", "onnxruntime", "fp16", "model.onnx", drop=5.0),
        _artifact(b, "onnxruntime-missing", "onnxruntime", "int8-static", "model.onnx", drop=0.1),
        _artifact(b, "tflite-int8", "tflite", "int8", "model.tflite", status="failed"),
    ]
    arts[-1]["error"] = "ConversionError: op X not supported"
    manifest = {
        "schema_version": 1,
        "model": {"name": "tiny", "source": "tests", "source_kind": "onnx", "opset": 17,
                  "metadata": {"task": "classify"}},
        "io": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 32]}],
               "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]},
        "validation": {"file": "data/validation.npz", "sha256": sha256_file(b / "data" / "validation.npz"),
                       "samples": 24, "labels": True},
        "status": "partial", "artifacts": arts,
    }
    (b / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return b
