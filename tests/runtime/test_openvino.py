"""OpenVINO backend: IR and ONNX against a NumPy reference, precision reporting, devices."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime import InputMismatchError, ModelLoadError, TensorSpec

ATOL_FP32 = 1e-5  # f32 hint: exact float32 arithmetic over 4 terms
ATOL_BF16 = 0.1   # bf16 keeps 8 mantissa bits: ~0.4% of |values| up to ~15 here


def _cpu_runs_bf16_by_default() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize("which", ["ir", "onnx"])
def test_ir_and_onnx_match_numpy_with_f32_hint(which, ov_ir, onnx_multi, multi_feeds, multi_reference):
    path = ov_ir if which == "ir" else onnx_multi
    with runtime.open_model(path, engine="openvino", precision_hint="f32", threads=1) as s:
        assert s.engine is runtime.Engine.OPENVINO
        assert s.executed_precision == "fp32"
        for batch, seq in [(1, 1), (3, 7), (2, 16)]:
            feeds = multi_feeds(batch, seq, seed=batch)
            out, ref = s.run(feeds), multi_reference(**feeds)
            assert set(out) == {"scaled", "pooled"}
            for name in ref:
                assert out[name].dtype == np.float32
                np.testing.assert_allclose(out[name], ref[name], atol=ATOL_FP32)


def test_specs_have_names_dtypes_and_dynamic_dims(ov_ir):
    with runtime.open_model(ov_ir) as s:
        # OpenVINO keeps no symbolic dim names: dynamic dims are None
        assert s.inputs == [
            TensorSpec("feats", "float32", (None, None, 4)),
            TensorSpec("ids", "int64", (None, None)),
        ]
        assert [(o.name, o.dtype, o.shape) for o in s.outputs] == [
            ("scaled", "float32", (None, None, 3)), ("pooled", "float32", (None, None)),
        ]
        assert s.describe()["engine_version"]


def test_default_precision_is_what_the_cpu_really_runs(ov_ir, multi_feeds, multi_reference):
    """Without a hint an FP32 IR runs in bf16 on a bf16-capable CPU, and it shows in the numbers."""
    feeds = multi_feeds(4, 32, seed=5)
    ref = multi_reference(**feeds)["scaled"]
    with runtime.open_model(ov_ir) as default, runtime.open_model(ov_ir, precision_hint="fp32") as f32:
        err_default = np.abs(default.run(feeds)["scaled"] - ref).max()
        err_f32 = np.abs(f32.run(feeds)["scaled"] - ref).max()
        assert f32.executed_precision == "fp32"
        if _cpu_runs_bf16_by_default():
            assert default.executed_precision == "bf16"
            assert err_default > 100 * err_f32  # bf16 rounding is real, not just a label
            assert err_default < ATOL_BF16
        else:
            assert default.executed_precision == "fp32"
    assert err_f32 < ATOL_FP32


def test_fake_quantize_ir_reports_int8(model_dir):
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 8], np.float32, name="x")
    fq = ops.fake_quantize(x, np.float32(-1), np.float32(1), np.float32(-1), np.float32(1), 256)
    w = np.eye(8, dtype=np.float32)
    path = model_dir / "fq.xml"
    ov.save_model(ov.Model([ops.matmul(fq, w, False, False)], [x], "fq"), str(path))
    with runtime.open_model(path, precision_hint="f32") as s:
        assert s.executed_precision == "int8"
        y = s.run({"x": np.linspace(-2, 2, 8, dtype=np.float32)[None]})
    # 256 levels over [-1, 1]: step 2/255; values outside are clamped
    expected = np.clip(np.linspace(-2, 2, 8), -1, 1)
    np.testing.assert_allclose(next(iter(y.values()))[0], expected, atol=1 / 255 + 1e-6)


def test_read_only_input_arrays_are_accepted(ov_ir, multi_feeds, multi_reference):
    feeds = multi_feeds(2, 3)
    for a in feeds.values():
        a.setflags(write=False)
    with runtime.open_model(ov_ir, precision_hint="f32") as s:
        out = s.run(feeds)
    np.testing.assert_allclose(out["pooled"], multi_reference(**feeds)["pooled"], atol=ATOL_FP32)


def test_outputs_do_not_alias_the_next_call(ov_ir, multi_feeds):
    with runtime.open_model(ov_ir, precision_hint="f32") as s:
        first = s.run(multi_feeds(2, 3, seed=1))["scaled"]
        kept = first.copy()
        s.run(multi_feeds(2, 3, seed=2))
    np.testing.assert_array_equal(first, kept)


def test_concurrent_callers_with_different_shapes(ov_ir, multi_feeds, multi_reference):
    with runtime.open_model(ov_ir, precision_hint="f32", threads=1) as s:
        def call(i: int) -> bool:
            feeds = multi_feeds(1 + i % 4, 1 + i % 6, seed=i)
            out, ref = s.run(feeds), multi_reference(**feeds)
            return all(out[n].shape == ref[n].shape and np.allclose(out[n], ref[n], atol=ATOL_FP32) for n in ref)

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(call, range(60)))


def test_wrong_dtype_is_refused_before_the_engine(ov_ir, multi_feeds):
    feeds = multi_feeds(1, 2)
    with runtime.open_model(ov_ir) as s, pytest.raises(InputMismatchError, match="'ids' must be int64"):
        s.run({**feeds, "ids": feeds["ids"].astype(np.int32)})


@pytest.mark.parametrize("device", ["NOSUCHDEVICE", "NOSUCHDEVICE.1", "AUTO:NOSUCHDEVICE,CPU"])
def test_unknown_device_lists_the_available_ones(ov_ir, device):
    with pytest.raises(ModelLoadError) as exc:
        runtime.open_model(ov_ir, device=device)
    msg = str(exc.value)
    assert "NOSUCHDEVICE" in msg and "'CPU'" in msg and "multi.xml" in msg


@pytest.mark.parametrize("device", ["CPU", "cpu", "AUTO", "AUTO:CPU"])
def test_real_and_virtual_devices_open(ov_ir, device, multi_feeds):
    with runtime.open_model(ov_ir, device=device, precision_hint="f32") as s:
        assert s.executed_precision == "fp32"
        assert s.run(multi_feeds(1, 2))["scaled"].shape == (1, 2, 3)


def test_ir_without_bin_names_the_missing_file(ov_ir, tmp_path):
    xml = tmp_path / "lonely.xml"
    shutil.copy(ov_ir, xml)
    with pytest.raises(ModelLoadError, match=r"lonely\.bin not found"):
        runtime.open_model(xml)


def test_corrupt_ir_names_the_file(ov_ir, tmp_path):
    xml = tmp_path / "broken.xml"
    xml.write_text("<net name='x'><layers>")
    shutil.copy(ov_ir.with_suffix(".bin"), tmp_path / "broken.bin")
    with pytest.raises(ModelLoadError) as exc:
        runtime.open_model(xml)
    assert "broken.xml" in str(exc.value) and exc.value.__cause__ is not None


def test_unknown_precision_hint_is_a_value_error(ov_ir):
    with pytest.raises(ValueError, match="precision_hint 'int3'"):
        runtime.open_model(ov_ir, precision_hint="int3")
