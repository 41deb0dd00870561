"""ONNX Runtime backend against a NumPy reference, plus the validation every backend shares."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime import InputMismatchError, TensorSpec

ATOL_FP32 = 1e-5  # float32 MatMul over 4 terms against a float64 reference


def test_specs_keep_names_dtypes_and_symbolic_dims(onnx_multi):
    with runtime.open_model(onnx_multi) as s:
        assert s.engine is runtime.Engine.ONNXRUNTIME
        assert s.inputs == [
            TensorSpec("feats", "float32", ("batch", "seq", 4)),
            TensorSpec("ids", "int64", ("batch", "seq")),
        ]
        assert s.outputs == [
            TensorSpec("scaled", "float32", ("batch", "seq", 3)),
            TensorSpec("pooled", "float32", ("batch", "seq")),
        ]
        assert s.raw_inputs == s.inputs and s.raw_outputs == s.outputs
        assert s.executed_precision == "fp32"
        assert s.load_time_s > 0


@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 7), (2, 16)])
def test_matches_numpy_on_dynamic_batch_and_seq(onnx_multi, multi_feeds, multi_reference, batch, seq):
    feeds = multi_feeds(batch, seq)
    with runtime.open_model(onnx_multi, threads=1) as s:
        out = s.run(feeds)
    ref = multi_reference(**feeds)
    assert set(out) == {"scaled", "pooled"}
    for name in ref:
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], ref[name], atol=ATOL_FP32)


def test_run_raw_equals_run_for_a_float_model(onnx_multi, multi_feeds, multi_reference):
    feeds = multi_feeds(2, 3)
    with runtime.open_model(onnx_multi) as s:
        a, b = s.run(feeds), s.run_raw(feeds)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda f: {"feats": f["feats"]}, "missing ['ids']"),
        (lambda f: {**f, "extra": f["ids"]}, "unknown ['extra']"),
        (lambda f: {"feats": f["feats"], "tokens": f["ids"]}, "unknown ['tokens']"),
        (lambda f: {**f, "ids": f["ids"].astype(np.int32)}, "'ids' must be int64, got int32"),
        (lambda f: {**f, "feats": f["feats"].astype(np.float64)}, "'feats' must be float32"),
        (lambda f: {**f, "feats": f["feats"][..., :3]}, "'feats' has shape [2, 3, 3]"),
        (lambda f: {**f, "ids": f["ids"][0]}, "'ids' has shape [3]"),
    ],
)
def test_wrong_feeds_raise_input_mismatch(onnx_multi, multi_feeds, multi_reference, mutate, message):
    with runtime.open_model(onnx_multi) as s:
        with pytest.raises(InputMismatchError) as exc:
            s.run(mutate(multi_feeds(2, 3)))
    assert message in str(exc.value)
    assert "multi.onnx" in str(exc.value)


def test_concurrent_callers_get_their_own_results(onnx_multi, multi_feeds, multi_reference):
    from concurrent.futures import ThreadPoolExecutor

    with runtime.open_model(onnx_multi, threads=1) as s:
        def call(i: int) -> bool:
            feeds = multi_feeds(1 + i % 3, 2 + i % 5, seed=i)
            out, ref = s.run(feeds), multi_reference(**feeds)
            return all(np.allclose(out[n], ref[n], atol=ATOL_FP32) for n in ref)

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(call, range(40)))


# -- executed precision ----------------------------------------------------------------

class _Calib:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._it = iter([{"x": rng.standard_normal((2, 16)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self._it, None)


def test_precision_is_detected_from_the_graph_without_a_stamp(onnx_linear, model_dir):
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    dynamic, static = model_dir / "linear_dyn.onnx", model_dir / "linear_qdq.onnx"
    quantize_dynamic(str(onnx_linear), str(dynamic))
    calib = type("Calib", (_Calib, CalibrationDataReader), {})()
    quantize_static(str(onnx_linear), str(static), calib)
    assert runtime.open_model(onnx_linear).executed_precision == "fp32"
    assert runtime.open_model(dynamic).executed_precision == "int8"
    assert runtime.open_model(static).executed_precision == "int8"


def test_dequantize_only_graph_is_not_reported_as_int8(model_dir):
    """Weight-only QDQ (DequantizeLinear alone) computes in float: the scan must not match
    ``QuantizeLinear`` inside ``DequantizeLinear``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(8, dtype=np.int8).reshape(2, 4), "Wq")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["Wq", "scale"], ["W"]),
         helper.make_node("MatMul", ["x", "W"], ["y"])],
        "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w, numpy_helper.from_array(np.array(0.5, np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = model_dir / "dq_only.onnx"
    onnx.save(model, path)
    with runtime.open_model(path) as s:
        assert s.executed_precision == "fp32"
        y = s.run({"x": np.ones((1, 2), np.float32)})["y"]
    np.testing.assert_allclose(y, np.ones((1, 2)) @ (np.arange(8).reshape(2, 4) * 0.5))


def test_toolchain_stamp_wins(onnx_linear_stamped):
    assert runtime.open_model(onnx_linear_stamped).executed_precision == "fp16"


def test_unknown_provider_names_the_available_ones(onnx_linear):
    with pytest.raises(runtime.ModelLoadError) as exc:
        runtime.open_model(onnx_linear, device="NOSUCH")
    assert "CPUExecutionProvider" in str(exc.value) and "linear.onnx" in str(exc.value)
