"""Shapes as real models have them, at the runtime layer: rank-0 (scalar) inputs on every
engine, placeholder dims, batch axes that are not axis 0, the bench's inputs for them, and the
precision a fp16-weight .tflite really executes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.bench import inputs
from runtime.bench.errors import BatchShapeError, InputDataError
from runtime.spec import TensorSpec, find_batch_axis, tie_name


def _scalar_model(path: Path) -> Path:
    """``y = x * sr`` with ``x`` float32 [?, 3] and ``sr`` a float32 scalar; ``state [2, ?, 4]``
    passes through (Silero VAD's input kinds: unnamed dims, a fixed leading 2, a scalar)."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "sr"], ["y"]), helper.make_node("Identity", ["state"], ["state_out"])], "s",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 4]),
         helper.make_tensor_value_info("sr", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, None, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))
    return path


def test_batch_axis_and_tie_rules() -> None:
    assert find_batch_axis((None, None)) == 0 and find_batch_axis((2, None, 128)) is None
    assert find_batch_axis(()) is None and find_batch_axis((2, "batch", 128)) == 1
    assert find_batch_axis(("p2o.DynamicDimension.0", 3, "?", "?")) == 0 and find_batch_axis((1, 3, 8, 8)) == 0
    assert find_batch_axis(("seq", 4)) is None and find_batch_axis((6, 128)) is None
    assert tie_name("?") is None and tie_name("") is None and tie_name(None) is None and tie_name("seq") == "seq"


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_scalar_input_runs_and_keeps_rank_0(engine: str, tmp_path: Path) -> None:
    path = _scalar_model(tmp_path / "s.onnx")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with runtime.open_model(path, engine=engine) as s:
        specs = {t.name: t for t in s.inputs}
        assert specs["sr"].shape == ()
        out = s.run({"x": x, "state": np.zeros((2, 2, 4), np.float32), "sr": np.float32(2.0)})
        assert np.allclose(out["y"], 2 * x) and out["state_out"].shape == (2, 2, 4)
        with pytest.raises(runtime.InputMismatchError, match="model expects"):
            s.run({"x": x, "state": np.zeros((2, 2, 4), np.float32), "sr": np.array([2.0], np.float32)})


def test_tflite_scalar_input(tmp_path: Path) -> None:
    import torch
    import litert_torch

    class Scale(torch.nn.Module):
        def forward(self, x, k):
            return x * k

    path = tmp_path / "scalar.tflite"
    litert_torch.convert(Scale().eval(), (torch.ones(1, 3), torch.tensor(2.0))).export(str(path))
    with runtime.open_model(path, engine="tflite") as s:
        k = [t for t in s.inputs if t.shape == ()]
        assert len(k) == 1
        feeds = {t.name: (np.float32(3.0) if t.shape == () else np.ones((1, 3), np.float32)) for t in s.inputs}
        out = next(iter(s.run(feeds).values()))
        assert np.allclose(out, 3.0)


def test_fp16_weight_tflite_reports_what_xnnpack_executes(tmp_path: Path) -> None:
    import torch
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes

    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    path = tmp_path / "fp16.tflite"
    litert_torch.convert(m, (torch.randn(1, 16),), quant_config=quant_recipes.full_fp16_recipe()).export(str(path))
    with runtime.open_model(path, engine="tflite") as s:
        d = s.describe()
        assert d["executed_precision"] == "fp32" and d["weight_precision"] == "fp16"


def test_bench_inputs_follow_batch_axes_and_scalars() -> None:
    specs = [TensorSpec("input", "float32", (None, 8)), TensorSpec("state", "float32", (2, None, 4)),
             TensorSpec("sr", "int64", ())]
    arrays = inputs.random_sample_arrays(specs, count=4, seed=0, batch_axes={"state": 1})
    assert arrays["input"].shape == (4, 8) and arrays["state"].shape == (4, 2, 4) and arrays["sr"].shape == (4,)
    pool = inputs.feed_pool(arrays, specs, batch=2, pool=2, batch_axes={"state": 1})
    assert pool[0]["input"].shape == (2, 8) and pool[0]["state"].shape == (2, 2, 4) and pool[0]["sr"].shape == ()
    assert np.array_equal(pool[0]["state"][:, 1], arrays["state"][1])
    # without a declared batch axis, state has none: fed whole, and a batch of 2 is not refused for it
    inputs.check_batch(specs, 2)
    with pytest.raises(InputDataError, match=r"no size is known for dynamic dim\(s\) 1 \(\?\)"):
        inputs.random_sample_arrays(specs, count=2, seed=0)
    with pytest.raises(BatchShapeError, match=r"batch axis 0 is 1\): batch 2 does not fit"):
        inputs.check_batch([TensorSpec("x", "float32", (1, 3))], 2)


def test_bench_names_the_dynamic_dim_that_breaks(tmp_path: Path) -> None:
    """A model declaring [?, 3] that only works at batch 1 (a Reshape baked to 3 values)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([3], np.int64), "shape")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "r",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], initializer=[shape])
    path = tmp_path / "r.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with runtime.open_model(path) as s:
        feed = {"x": np.ones((2, 3), np.float32)}
        with pytest.raises(runtime.InferenceError) as ei:
            s.run(feed)
        err = inputs.explain_failure(ei.value, feed, s.inputs)
    assert isinstance(err, inputs.DynamicDimError)
    assert "fails at x:0 (batch)=2" in str(err)
