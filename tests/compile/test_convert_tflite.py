"""TFLite converter: real litert-torch conversions of small torch models, checked structurally
(signature names, static shapes, int8 tensors) and numerically against torch, run through
``runtime.open_model`` (the TFLite backend quantizes/dequantizes int8 I/O).

Declared tolerances (on outputs of magnitude ~1):
- fp32: max abs error 1e-4
- int8: cosine >= 0.99 and max abs error <= 10% of the output range
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

import runtime  # noqa: E402
from runtime.spec import Engine, TensorSpec  # noqa: E402
from toolchain.compile.context import BuildContext, QuantOptions, SampleSet  # noqa: E402
from toolchain.compile.tflite import TfliteConverter  # noqa: E402
from toolchain.errors import ConversionError, DataError  # noqa: E402

import convert_test_models  # noqa: E402,I001
from convert_test_models import TwoInput, cosine as _cosine, torch_ref as _torch_ref, two_input_calibration  # noqa: E402,I001

pytestmark = pytest.mark.slow

FP32_ATOL = 1e-4
INT8_MIN_COSINE = 0.99
INT8_MAX_ERR_FRACTION = 0.10


class TinyConv(convert_test_models.TinyConv):
    def forward(self, x):  # the user's input name ("image") differs from the argument name
        return super().forward(x)


class Det(torch.nn.Module):
    def forward(self, m):
        return torch.linalg.det(m)


def _ctx(name, module, args, inputs, outputs, calibration, dyn=None) -> BuildContext:
    # TFLite converts from torch; reference_onnx is not read by this converter.
    return BuildContext(
        model_name=name, reference_onnx=Path("unused.onnx"), inputs=tuple(inputs), outputs=tuple(outputs),
        calibration=calibration, torch_module=module.eval(), example_inputs=args, dynamic_dims=dyn or {},
    )


@pytest.fixture(scope="module")
def conv_ctx() -> BuildContext:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = SampleSet([{"image": rng.standard_normal((1, 1, 16, 16), dtype=np.float32)} for _ in range(32)])
    # example at batch 2 with a dynamic batch axis: TFLite is converted at batch 1
    return _ctx(
        "tinyconv", TinyConv(), (torch.randn(2, 1, 16, 16),),
        [TensorSpec("image", "float32", ("batch", 1, 16, 16))], [TensorSpec("logits", "float32", ("batch", 10))],
        calib, {"image": {0: "batch"}},
    )


@pytest.fixture(scope="module")
def two_ctx() -> BuildContext:
    torch.manual_seed(0)
    calib = two_input_calibration()
    return _ctx(
        "twoinput", TwoInput(), (torch.randint(0, 50, (1, 7)), torch.randn(1, 7, 16)),
        [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("feats", "float32", ("batch", "seq", 16))],
        [TensorSpec("scores", "float32", ("batch", 4)), TensorSpec("energy", "float32", ("batch", "seq"))],
        calib, {"ids": {0: "batch", 1: "seq"}, "feats": {0: "batch", 1: "seq"}},
    )


def _details(path: Path) -> tuple[dict, list[dict]]:
    interp = Interpreter(model_path=str(path))
    runner = interp.get_signature_runner("serving_default")
    io = {**runner.get_input_details(), **{f"out:{k}": v for k, v in runner.get_output_details().items()}}
    return io, interp.get_tensor_details()


def test_fp32_keeps_user_names_static_batch_1_and_matches_torch(conv_ctx, tmp_path):
    path = TfliteConverter().build(conv_ctx, precision="fp32", out_dir=tmp_path / "tfl")
    assert path == tmp_path / "tfl" / "model.tflite"
    assert [p.name for p in path.parent.iterdir()] == ["model.tflite"]  # no staging left
    io, _ = _details(path)
    assert set(io) == {"image", "out:logits"}
    assert list(io["image"]["shape"]) == [1, 1, 16, 16] and io["image"]["dtype"] == np.float32
    sess = runtime.open_model(path, engine=Engine.TFLITE)
    rng = np.random.default_rng(5)
    for _ in range(4):
        feeds = {"image": rng.standard_normal((1, 1, 16, 16), dtype=np.float32)}
        out = sess.run(feeds)["logits"]
        assert np.abs(out - _torch_ref(conv_ctx, feeds)["logits"]).max() <= FP32_ATOL


def test_int8_has_int8_tensors_and_tracks_torch(conv_ctx, tmp_path):
    path = TfliteConverter().build(conv_ctx, precision="int8", out_dir=tmp_path / "tfl8")
    io, tensors = _details(path)
    assert io["image"]["dtype"] == np.int8 and io["out:logits"]["dtype"] == np.int8  # full-integer I/O
    assert io["image"]["quantization"][0] > 0
    assert {t["dtype"] for t in tensors} <= {np.int8, np.int32}  # int8 weights/activations, int32 bias
    sess = runtime.open_model(path, engine=Engine.TFLITE)
    assert sess.executed_precision == "int8" and sess.inputs[0].dtype == "float32"
    rng = np.random.default_rng(6)
    feeds_all = [{"image": rng.standard_normal((1, 1, 16, 16), dtype=np.float32)} for _ in range(8)]
    out = np.concatenate([sess.run(f)["logits"] for f in feeds_all])
    ref = np.concatenate([_torch_ref(conv_ctx, f)["logits"] for f in feeds_all])
    assert _cosine(out, ref) >= INT8_MIN_COSINE
    assert np.abs(out - ref).max() <= INT8_MAX_ERR_FRACTION * float(ref.max() - ref.min())


def test_two_inputs_keep_names_and_int64_ids(two_ctx, tmp_path):
    rng = np.random.default_rng(3)
    feeds = {"ids": rng.integers(0, 50, (1, 7), dtype=np.int64), "feats": rng.standard_normal((1, 7, 16), dtype=np.float32)}
    ref = _torch_ref(two_ctx, feeds)
    for precision in ("fp32", "int8"):
        path = TfliteConverter().build(two_ctx, precision=precision, out_dir=tmp_path / precision)
        io, _ = _details(path)
        assert set(io) == {"ids", "feats", "out:scores", "out:energy"}
        assert io["ids"]["dtype"] == np.int64  # ids are not downcast: same feeds as other engines
        out = runtime.open_model(path, engine=Engine.TFLITE).run(feeds)
        for name in ("scores", "energy"):
            assert out[name].shape == ref[name].shape
            if precision == "fp32":
                assert np.abs(out[name] - ref[name]).max() <= FP32_ATOL, name
            else:
                assert _cosine(out[name], ref[name]) >= INT8_MIN_COSINE, name


def test_onnx_source_is_refused_naming_pytorch(conv_ctx, tmp_path):
    ctx = replace(conv_ctx, torch_module=None, example_inputs=None)
    with pytest.raises(ConversionError, match="needs the PyTorch source"):
        TfliteConverter().build(ctx, precision="fp32", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_op_without_lowering_is_refused_naming_op_and_writes_nothing(tmp_path):
    ctx = _ctx("det", Det(), (torch.randn(1, 3, 3),), [TensorSpec("m", "float32", (1, 3, 3))],
               [TensorSpec("d", "float32", (1,))], None)
    out_dir = tmp_path / "det"
    with pytest.raises(ConversionError, match=r"aten\._linalg_det.*no TFLite lowering") as info:
        TfliteConverter().build(ctx, precision="fp32", out_dir=out_dir)
    assert "test_convert_tflite.py" in str(info.value) and "torch.linalg.det(m)" in str(info.value)  # user source line
    assert list(out_dir.iterdir()) == []


def test_int8_refusals_come_before_any_work(conv_ctx, tmp_path):
    conv = TfliteConverter()
    with pytest.raises(ConversionError, match="needs calibration data"):
        conv.build(replace(conv_ctx, calibration=None), precision="int8", out_dir=tmp_path / "a")
    with pytest.raises(ConversionError, match="percentile.*minmax"):
        conv.build(replace(conv_ctx, quant=QuantOptions(calibration_method="percentile")), precision="int8",
                   out_dir=tmp_path / "b")
    wrong_shape = SampleSet([{"image": np.zeros((1, 1, 8, 8), np.float32)}])
    with pytest.raises(DataError, match=r"float32\[1, 1, 8, 8\].*static.*float32\[1, 1, 16, 16\]"):
        conv.build(replace(conv_ctx, calibration=wrong_shape), precision="int8", out_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="fp16"):
        conv.build(conv_ctx, precision="fp16", out_dir=tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_converter_modules_import_nothing_heavy():
    """Listing converters must stay cheap: both modules defer every engine import to build()."""
    import subprocess
    import sys

    code = (
        "import sys, toolchain.compile.openvino, toolchain.compile.tflite\n"
        "heavy = [m for m in ('torch', 'openvino', 'nncf', 'litert_torch', 'ai_edge_litert', 'torchao', 'onnx')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == ""
