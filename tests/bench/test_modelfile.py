"""One file, one answer: a bare OpenVINO IR runs at the precision the same IR inside a build runs
at (the deploy precision); `--ov-precision both` measures both; a corrupt file is bad input."""

from __future__ import annotations

import pytest

from runtime.bench.spec import RunLength
from toolchain.bench import api, plan
from toolchain.bench.errors import BenchInputError
from toolchain.bench.modelfile import file_precision

TINY = RunLength(warmup_min_iters=2, warmup_min_s=0.0, min_iters=20, min_duration_s=0.0, max_duration_s=5.0)


def _int8_ir(path):
    """A tiny IR with a FakeQuantize node (what NNCF int8 produces)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 8], np.float32, name="x")
    lo, hi = ops.constant(np.float32(-1.0)), ops.constant(np.float32(1.0))
    fq = ops.fake_quantize(x, lo, hi, lo, hi, 256)
    y = ops.matmul(fq, ops.constant(np.ones((8, 4), np.float32)), False, False)
    ov.save_model(ov.Model([y], [x], "q"), str(path), compress_to_fp16=False)
    return path


def test_precision_read_from_the_file(build_dir, tmp_path):
    assert file_precision(build_dir / "openvino-fp32" / "model.xml", "openvino") == "fp32"
    assert file_precision(build_dir / "onnxruntime-fp32" / "model.onnx", "onnxruntime") == "fp32"
    assert file_precision(build_dir / "onnxruntime-int8-dynamic" / "model.onnx", "onnxruntime") == "int8"
    assert file_precision(_int8_ir(tmp_path / "q.xml"), "openvino") == "int8"


@pytest.mark.parametrize("name,content,match", [
    ("bad.onnx", b"\x00garbage", "not a readable ONNX model"),
    ("bad.xml", b"<net><layers>", "not a readable OpenVINO IR"),
    ("bad.tflite", b"12345678abcd", "not a TFLite flatbuffer"),
])
def test_corrupt_files_are_bad_input(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    if name.endswith(".xml"):
        p.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(BenchInputError, match=match):
        plan.read_source(p)


def test_ir_without_its_weights_is_bad_input(tmp_path, build_dir):
    import shutil

    shutil.copy(build_dir / "openvino-fp32" / "model.xml", tmp_path / "m.xml")
    with pytest.raises(BenchInputError, match="m.bin not found"):
        plan.read_source(tmp_path / "m.xml")


def test_bare_ir_and_the_same_ir_in_a_build_run_at_the_same_precision(build_dir, tmp_path):
    ir = build_dir / "openvino-fp32" / "model.xml"
    bare = api.bench(ir, config=api.make_config(run_length=TINY), out_dir=tmp_path / "bare", progress=None)
    built = api.bench(build_dir, config=api.make_config(run_length=TINY, artifacts=["openvino-fp32"]),
                      out_dir=tmp_path / "built", progress=None)
    (b,), (c,) = bare["cells"], built["cells"]
    assert (b["precision"], b["precision_hint"], b["executed_precision"]) == ("fp32", "f32", "fp32")
    assert (c["precision_hint"], c["executed_precision"]) == (b["precision_hint"], b["executed_precision"])
    both = api.bench(ir, config=api.make_config(run_length=TINY, ov_precision="both"), out_dir=tmp_path / "both",
                     progress=None)
    assert sorted(str(c["precision_hint"]) for c in both["cells"]) == ["None", "f32"]
    assert {c["executed_precision"] for c in both["cells"] if c["precision_hint"] == "f32"} == {"fp32"}
    from toolchain.bench import report_md

    assert "fp32 (hint f32, runs fp32)" in report_md.tables(both)  # the report says which ran
