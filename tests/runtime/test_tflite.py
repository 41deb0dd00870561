"""TFLite/LiteRT backend: litert-torch models against PyTorch, int8 quantize/dequantize,
signature vs tensor names, resize of dynamic dims, thread-safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime import InputMismatchError, TensorSpec

pytestmark = pytest.mark.slow  # converts PyTorch models with litert-torch (a few seconds)

ATOL_FP32 = 1e-5
#: full int8 (per-channel weights, per-tensor activations, 16 calibration samples) vs fp32
#: PyTorch on logits of magnitude ~0.5: a few output quantization steps (~0.004 each)
ATOL_INT8 = 0.03


def _details(path):
    """Independent view of the I/O tensors straight from the interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    runner = it.get_signature_runner()
    return runner.get_input_details(), runner.get_output_details()


def test_fp32_matches_pytorch_and_keeps_user_names(tflite_models):
    with runtime.open_model(tflite_models["fp32"], threads=1) as s:
        assert s.engine is runtime.Engine.TFLITE
        assert s.inputs == [TensorSpec("img", "float32", (1, 3, 8, 8))]
        assert s.outputs == [TensorSpec("logits", "float32", (1, 5))]
        assert s.executed_precision == "fp32"
        assert s.describe()["signature"] == "serving_default"
        for x, ref in zip(tflite_models["inputs"], tflite_models["reference"]):
            np.testing.assert_allclose(s.run({"img": x})["logits"], ref, atol=ATOL_FP32)


def test_int8_takes_and_gives_float_and_matches_pytorch(tflite_models):
    with runtime.open_model(tflite_models["int8"]) as s:
        assert s.executed_precision == "int8"
        assert s.inputs == [TensorSpec("img", "float32", (1, 3, 8, 8))]
        assert s.outputs == [TensorSpec("logits", "float32", (1, 5))]
        assert s.raw_inputs == [TensorSpec("img", "int8", (1, 3, 8, 8))]
        assert s.raw_outputs == [TensorSpec("logits", "int8", (1, 5))]
        for x, ref in zip(tflite_models["inputs"], tflite_models["reference"]):
            out = s.run({"img": x})["logits"]
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, ref, atol=ATOL_INT8)


def test_int8_run_is_quantize_run_raw_dequantize_with_the_tensors_own_params(tflite_models):
    path = tflite_models["int8"]
    (in_d,), (out_d,) = (d.values() for d in _details(path))
    in_scale, in_zp = in_d["quantization"]
    out_scale, out_zp = out_d["quantization"]
    assert in_scale > 0 and out_scale > 0
    x = tflite_models["inputs"][0]
    q = np.clip(np.round(x / in_scale) + in_zp, -128, 127).astype(np.int8)
    with runtime.open_model(path) as s:
        raw = s.run_raw({"img": q})["logits"]
        assert raw.dtype == np.int8
        expected = (raw.astype(np.float32) - out_zp) * np.float32(out_scale)
        np.testing.assert_array_equal(s.run({"img": x})["logits"], expected)


def test_int8_quantize_saturates_instead_of_wrapping(tflite_models):
    with runtime.open_model(tflite_models["int8"]) as s:
        huge = s.run({"img": np.full((1, 3, 8, 8), 1e6, np.float32)})["logits"]
        at_max = s.run_raw({"img": np.full((1, 3, 8, 8), 127, np.int8)})["logits"]
        tiny = s.run({"img": np.full((1, 3, 8, 8), -1e6, np.float32)})["logits"]
        at_min = s.run_raw({"img": np.full((1, 3, 8, 8), -128, np.int8)})["logits"]
    _, (out_d,) = (d.values() for d in _details(tflite_models["int8"]))
    scale, zp = out_d["quantization"]
    np.testing.assert_array_equal(huge, (at_max.astype(np.float32) - zp) * np.float32(scale))
    np.testing.assert_array_equal(tiny, (at_min.astype(np.float32) - zp) * np.float32(scale))


def test_int8_raw_and_float_feeds_are_checked_separately(tflite_models):
    with runtime.open_model(tflite_models["int8"]) as s:
        with pytest.raises(InputMismatchError, match="must be float32, got int8"):
            s.run({"img": np.zeros((1, 3, 8, 8), np.int8)})
        with pytest.raises(InputMismatchError, match="must be int8, got float32"):
            s.run_raw({"img": np.zeros((1, 3, 8, 8), np.float32)})
        with pytest.raises(InputMismatchError, match=r"has shape \[2, 3, 8, 8\]"):
            s.run({"img": np.zeros((2, 3, 8, 8), np.float32)})


@pytest.mark.parametrize("variant", ["dynamic", "nosig"])
def test_dynamic_dims_resize_and_match_numpy(tflite_elementwise, variant):
    path = tflite_elementwise[variant]
    with runtime.open_model(path) as s:
        names = {spec.name for spec in s.inputs}
        if variant == "dynamic":
            assert names == {"feats", "ids"}  # signature names survive
            assert {o.name for o in s.outputs} == {"scaled", "pooled"}
        else:
            assert s.describe()["signature"] is None  # tensor names, whatever they are
        feats_name = next(spec.name for spec in s.inputs if spec.dtype == "float32")
        ids_spec = next(spec for spec in s.inputs if spec.name != feats_name)
        assert ids_spec.dtype == "int32"  # litert-torch narrows int64 inputs to int32
        assert all(d is None for d in ids_spec.shape)
        for batch, seq in [(2, 5), (1, 1), (4, 9), (2, 5)]:
            rng = np.random.default_rng(batch * seq)
            feats = rng.standard_normal((batch, seq)).astype(np.float32)
            ids = rng.integers(0, 10, (batch, seq)).astype(np.int32)
            out = s.run({feats_name: feats, ids_spec.name: ids})
            scaled = next(v for v in out.values() if v.ndim == 2)
            pooled = next(v for v in out.values() if v.ndim == 1)
            np.testing.assert_allclose(scaled, feats * 2 + ids, atol=ATOL_FP32)
            np.testing.assert_allclose(pooled, feats.sum(-1), atol=ATOL_FP32)


def test_static_model_refuses_another_batch(tflite_elementwise):
    with runtime.open_model(tflite_elementwise["static"]) as s:
        with pytest.raises(InputMismatchError, match="model expects"):
            s.run({"feats": np.zeros((3, 5), np.float32), "ids": np.zeros((3, 5), np.int32)})


def test_concurrent_callers_are_serialized(tflite_elementwise):
    with runtime.open_model(tflite_elementwise["dynamic"], threads=1) as s:
        def call(i: int) -> bool:
            b, q = 1 + i % 3, 1 + i % 5
            feats = np.full((b, q), float(i), np.float32)
            ids = np.full((b, q), i, np.int32)
            out = s.run({"feats": feats, "ids": ids})
            return np.array_equal(out["scaled"], np.full((b, q), 3.0 * i, np.float32)) and np.array_equal(
                out["pooled"], np.full((b,), q * float(i), np.float32))

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(call, range(60)))


def test_tflite_runs_on_cpu_only(tflite_models):
    with pytest.raises(runtime.ModelLoadError, match="CPU' only"):
        runtime.open_model(tflite_models["fp32"], device="GPU")
