"""OpenVINO converter: real ONNX exports of small torch models -> IR, checked structurally and
numerically against torch (run through ``runtime.open_model``, i.e. the OpenVINO backend).

Declared tolerances (on outputs of magnitude ~1):
- fp32: max abs error 1e-4 (forced f32 execution; the IR is bit-for-bit the ONNX weights)
- fp16: max abs error 1e-2 (weights rounded to fp16, ~1e-3 relative)
- int8: cosine >= 0.99 and max abs error <= 10% of the output range (8-bit activations/weights)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")

import runtime  # noqa: E402
from runtime.spec import Engine, TensorSpec  # noqa: E402
from toolchain.compile.context import BuildContext, QuantOptions, SampleSet  # noqa: E402
from toolchain.compile.openvino import OpenVinoConverter  # noqa: E402
from toolchain.errors import ConversionError, DataError  # noqa: E402

from convert_test_models import TinyConv, TwoInput, cosine as _cosine, torch_ref as _torch_ref, two_input_calibration  # noqa: E402,I001

pytestmark = pytest.mark.slow

FP32_ATOL = 1e-4
FP16_ATOL = 1e-2
INT8_MIN_COSINE = 0.99
INT8_MAX_ERR_FRACTION = 0.10


def _export(module, args, path: Path, in_names, out_names, dyn: dict[str, dict[int, str]]) -> None:
    dims = {n: {a: torch.export.Dim(s) for a, s in axes.items()} for n, axes in dyn.items()}
    torch.onnx.export(
        module, args, str(path), dynamo=True, input_names=in_names, output_names=out_names,
        dynamic_shapes=dims or None,
    )


def _ctx(name, module, args, tmp: Path, inputs, outputs, dyn, calibration, quant=QuantOptions()):
    onnx_path = tmp / "reference" / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    _export(module, args, onnx_path, [s.name for s in inputs], [s.name for s in outputs], dyn)
    return BuildContext(
        model_name=name, reference_onnx=onnx_path, inputs=tuple(inputs), outputs=tuple(outputs),
        calibration=calibration, quant=quant, torch_module=module, example_inputs=args, dynamic_dims=dyn,
    )


@pytest.fixture(scope="module")
def conv_ctx(tmp_path_factory) -> BuildContext:
    torch.manual_seed(0)
    module = TinyConv().eval()
    rng = np.random.default_rng(0)
    calib = SampleSet([{"image": rng.standard_normal((1, 1, 16, 16), dtype=np.float32)} for _ in range(32)])
    return _ctx(
        "tinyconv", module, (torch.randn(2, 1, 16, 16),), tmp_path_factory.mktemp("conv"),
        [TensorSpec("image", "float32", ("batch", 1, 16, 16))], [TensorSpec("logits", "float32", ("batch", 10))],
        {"image": {0: "batch"}}, calib,
    )


@pytest.fixture(scope="module")
def two_ctx(tmp_path_factory) -> BuildContext:
    torch.manual_seed(0)
    module = TwoInput().eval()
    calib = two_input_calibration()
    return _ctx(
        "twoinput", module, (torch.randint(0, 50, (2, 7)), torch.randn(2, 7, 16)), tmp_path_factory.mktemp("two"),
        [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("feats", "float32", ("batch", "seq", 16))],
        [TensorSpec("scores", "float32", ("batch", 4)), TensorSpec("energy", "float32", ("batch", "seq"))],
        {"ids": {0: "batch", 1: "seq"}, "feats": {0: "batch", 1: "seq"}}, calib,
    )


def _run(path: Path, feeds):
    sess = runtime.open_model(path, engine=Engine.OPENVINO, precision_hint="f32")
    return sess, sess.run(feeds)


def _conv_feeds(batch: int, seed: int = 7) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).standard_normal((batch, 1, 16, 16), dtype=np.float32)}


def _const_types(xml: Path) -> set[str]:
    model = ov.Core().read_model(str(xml))
    return {o.get_output_element_type(0).get_type_name() for o in model.get_ops() if o.get_type_name() == "Constant"}


def _op_types(xml: Path) -> set[str]:
    return {o.get_type_name() for o in ov.Core().read_model(str(xml)).get_ops()}


def test_fp32_keeps_names_dynamic_batch_and_matches_torch(conv_ctx, tmp_path):
    xml = OpenVinoConverter().build(conv_ctx, precision="fp32", out_dir=tmp_path / "ov-fp32")
    assert xml == tmp_path / "ov-fp32" / "model.xml"
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]  # no staging left
    assert "f16" not in _const_types(xml) and "FakeQuantize" not in _op_types(xml)
    for batch in (1, 3):  # dynamic batch survives
        feeds = _conv_feeds(batch)
        sess, out = _run(xml, feeds)
        assert [s.name for s in sess.inputs] == ["image"] and [s.name for s in sess.outputs] == ["logits"]
        assert not isinstance(sess.inputs[0].shape[0], int)
        ref = _torch_ref(conv_ctx, feeds)["logits"]
        assert out["logits"].shape == (batch, 10)
        assert np.abs(out["logits"] - ref).max() <= FP32_ATOL


def test_fp16_stores_f16_weights_and_matches_torch(conv_ctx, tmp_path):
    fp32 = OpenVinoConverter().build(conv_ctx, precision="fp32", out_dir=tmp_path / "a")
    fp16 = OpenVinoConverter().build(conv_ctx, precision="fp16", out_dir=tmp_path / "b")
    assert "f16" in _const_types(fp16)
    assert (fp16.with_suffix(".bin")).stat().st_size < 0.6 * (fp32.with_suffix(".bin")).stat().st_size
    feeds = _conv_feeds(4)
    _, out = _run(fp16, feeds)
    assert np.abs(out["logits"] - _torch_ref(conv_ctx, feeds)["logits"]).max() <= FP16_ATOL


def test_int8_has_fake_quantize_int8_weights_and_tracks_torch(conv_ctx, tmp_path):
    xml = OpenVinoConverter().build(conv_ctx, precision="int8", out_dir=tmp_path / "ov-int8")
    ops = _op_types(xml)
    assert "FakeQuantize" in ops
    assert "i8" in _const_types(xml)  # weights stored as int8, not float
    model = ov.Core().read_model(str(xml))
    recipe = model.get_rt_info(["edgeship", "quantization"]).value
    assert recipe["range_estimator"] == "MINMAX" and recipe["per_channel"] == "True"
    assert recipe["bias_correction"] in ("fast", "none")
    chosen = float(recipe[f"calibration_nmse_{recipe['bias_correction']}"])
    assert chosen <= min(float(recipe["calibration_nmse_fast"]), float(recipe["calibration_nmse_none"]))
    assert model.get_rt_info(["framework", "edgeship.precision"]).astype(str) == "int8"
    feeds = _conv_feeds(8)
    sess, out = _run(xml, feeds)
    assert sess.executed_precision == "int8"
    ref = _torch_ref(conv_ctx, feeds)["logits"]
    assert _cosine(out["logits"], ref) >= INT8_MIN_COSINE
    assert np.abs(out["logits"] - ref).max() <= INT8_MAX_ERR_FRACTION * float(ref.max() - ref.min())


def test_two_inputs_int64_dynamic_seq_all_precisions(two_ctx, tmp_path):
    rng = np.random.default_rng(3)
    for precision in ("fp32", "int8"):
        xml = OpenVinoConverter().build(two_ctx, precision=precision, out_dir=tmp_path / precision)
        for batch, seq in ((1, 7), (3, 5), (2, 11)):  # batch and seq are both dynamic
            feeds = {"ids": rng.integers(0, 50, (batch, seq), dtype=np.int64),
                     "feats": rng.standard_normal((batch, seq, 16), dtype=np.float32)}
            sess, out = _run(xml, feeds)
            assert {s.name: s.dtype for s in sess.inputs} == {"ids": "int64", "feats": "float32"}
            assert sorted(out) == ["energy", "scores"]
            ref = _torch_ref(two_ctx, feeds)
            for name in ("scores", "energy"):
                assert out[name].shape == ref[name].shape
                if precision == "fp32":
                    assert np.abs(out[name] - ref[name]).max() <= FP32_ATOL, name
                else:
                    assert _cosine(out[name], ref[name]) >= INT8_MIN_COSINE, name


def test_unsupported_op_is_refused_naming_the_op_and_writes_nothing(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    ctx = BuildContext(
        model_name="bad", reference_onnx=path, inputs=(TensorSpec("x", "float32", (1, 4)),),
        outputs=(TensorSpec("y", "float32", (1, 4)),), calibration=None,
    )
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"com\.example\.Frobnicate") as info:
        OpenVinoConverter().build(ctx, precision="fp32", out_dir=out_dir)
    assert "OpenVINO cannot convert" in str(info.value) and "reference/bad.onnx" in str(info.value)
    assert str(tmp_path) not in str(info.value)  # not the build's staging path, gone after the build
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_int8_refusals_come_before_any_work(conv_ctx, tmp_path):
    from dataclasses import replace

    conv = OpenVinoConverter()
    with pytest.raises(ConversionError, match="needs calibration data"):
        conv.build(replace(conv_ctx, calibration=None), precision="int8", out_dir=tmp_path / "a")
    with pytest.raises(ConversionError, match="entropy.*minmax"):
        conv.build(replace(conv_ctx, quant=QuantOptions(calibration_method="entropy")), precision="int8",
                   out_dir=tmp_path / "b")
    wrong = SampleSet([{"img": np.zeros((1, 1, 16, 16), np.float32)}])
    with pytest.raises(DataError, match=r"\['img'\].*\['image'\]"):
        conv.build(replace(conv_ctx, calibration=wrong), precision="int8", out_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="int4"):
        conv.build(conv_ctx, precision="int4", out_dir=tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_percentile_recipe_reaches_nncf(conv_ctx, tmp_path):
    from dataclasses import replace

    conv = OpenVinoConverter()
    base = conv.build(conv_ctx, precision="int8", out_dir=tmp_path / "minmax")
    pct = conv.build(replace(conv_ctx, quant=QuantOptions(calibration_method="percentile")), precision="int8",
                     out_dir=tmp_path / "pct")
    feeds = _conv_feeds(4)
    ref = _torch_ref(conv_ctx, feeds)["logits"]
    outs = [_run(p, feeds)[1]["logits"] for p in (base, pct)]
    assert not np.array_equal(outs[0], outs[1])  # the method really reaches NNCF
    assert all(_cosine(o, ref) >= INT8_MIN_COSINE for o in outs)
