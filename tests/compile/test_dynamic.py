"""Issue 14: a dynamic axis must be dynamic in every artifact. A model whose export fixes a
declared axis is refused naming the axis, its value and the source line (or built static
under --allow-static); a really dynamic axis is verified at two sizes on every engine that
keeps it dynamic, and the manifest records the sizes. ONNX sources get the same check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.spec import Engine
from toolchain.compile.dynamic import SpecializationError
from toolchain.compile.options import CompileOptions
from toolchain.compile.pipeline import compile_model
from toolchain.compile.verify import Precision

MODELS = '''
import torch
import torch.nn as nn


class Fixed(nn.Module):
    """a reshape with a Python int taken from the example's width (torch.export refuses)"""
    def __init__(self, width):
        super().__init__()
        self.width = width

    def forward(self, x):
        return x.reshape(x.shape[0], 4 * self.width) * 2


class Silent(nn.Module):
    """a loop over the example's width: it exports, but the graph keeps the example's size"""
    def forward(self, x):
        return torch.stack([x[..., i] * 2 for i in range(x.shape[-1] // 2)], -1)


class Generic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(2)


def _ret(m):
    torch.manual_seed(0)
    return m.eval(), (torch.randn(1, 1, 4, 16),), {"input_names": ["image"], "output_names": ["out"],
                                                   "dynamic_axes": {"image": {0: "batch", 3: "width"}}}


def fixed():
    return _ret(Fixed(16))


def silent():
    return _ret(Silent())


def generic():
    return _ret(Generic())
'''

FP32 = (Precision.FP32,)


@pytest.fixture
def models(tmp_path: Path, write) -> Path:
    return write(tmp_path, "dynmodels.py", MODELS)


def _opts(models: Path, fn: str, out: Path, **kw) -> CompileOptions:
    return CompileOptions(source=f"{models}:{fn}", out_dir=out, targets=(Engine.ONNXRUNTIME,), precisions=FP32, **kw)


@pytest.mark.parametrize("fn, line, shows", [
    ("fixed", "return x.reshape(x.shape[0], 4 * self.width) * 2", "torch.export"),
    ("silent", "range(x.shape[-1] // 2)", "output 'out' has shape [8, 1, 4, 8] where PyTorch gives [8, 1, 4, 16]"),
])
def test_export_that_fixes_a_declared_axis_is_refused(models: Path, tmp_path: Path, fn: str, line: str, shows: str) -> None:
    with pytest.raises(SpecializationError) as ei:
        compile_model(_opts(models, fn, tmp_path / "b"))
    msg = str(ei.value)
    assert "dynamic dim image:3 ('width') is not dynamic in the export" in msg
    assert "fixed to the example's 16" in msg and f"dynmodels.py:" in msg and line in msg and shows in msg
    assert "--allow-static width" in msg
    assert not (tmp_path / "b" / "dynmodels").exists()  # nothing written


def test_allow_static_builds_it_static_and_says_so(models: Path, tmp_path: Path) -> None:
    res = compile_model(_opts(models, "fixed", tmp_path / "b", allow_static=("width",)))
    m = res.manifest
    assert res.exit_code == 0, [a["error"] for a in m["artifacts"]]
    assert m["model"]["static_dims"][0]["dim"] == "width" and m["model"]["static_dims"][0]["size"] == 16
    assert m["io"]["inputs"][0]["shape"] == ["batch", 1, 4, 16]
    a = m["artifacts"][0]
    assert a["io"]["inputs"][0]["shape"] == ["batch", 1, 4, 16] and a["verified_sizes"] == {"batch": [32, 8]}


@pytest.mark.slow
def test_really_dynamic_axis_is_verified_at_two_sizes_on_every_engine(models: Path, tmp_path: Path) -> None:
    res = compile_model(CompileOptions(source=f"{models}:generic", out_dir=tmp_path / "b", precisions=FP32 + (Precision.INT8,),
                                       random_calibration=True))
    m = res.manifest
    assert res.exit_code == 0, [a["error"] for a in m["artifacts"]]
    assert m["io"]["outputs"][0]["shape"] == ["batch", 4, "width"]  # output dims follow the inputs
    assert m["reference"]["verified_sizes"]["width"] == [16, 32]
    by = {a["id"]: a for a in m["artifacts"]}
    for aid in ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"):
        assert by[aid]["verified_sizes"]["width"] == [16, 32], aid
        sizes = by[aid]["verification"]["sizes"]
        assert [s["dims"]["width"] for s in sizes] == [16, 32] and all(s["passed"] for s in sizes)
    for aid in ("tflite-fp32", "tflite-int8"):  # static at the example's size: verified there only
        assert by[aid]["verified_sizes"]["width"] == [16] and by[aid]["io"]["inputs"][0]["shape"][3] == 16
    assert json.loads((res.build_dir / "manifest.json").read_text())["artifacts"][0]["verified_sizes"]


def _reshape_onnx(path: Path, *, width: int = 16) -> Path:
    """``image [batch, 4, width] -> out [batch, 4*width]``, its Reshape baked to the example's
    width: declared dynamic, works only at ``width``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([0, 4 * width], np.int64), "shape")  # 0: copy the batch
    g = helper.make_graph([helper.make_node("Reshape", ["image", "shape"], ["out"])], "r",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, "width"])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4 * width])],
                          initializer=[shape])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _identity_onnx(path: Path) -> Path:
    """``x [batch, n] -> y``, y declared ``[batch, 3]`` although it follows ``n``."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "i",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_source_is_checked_at_two_sizes_before_converting(tmp_path: Path) -> None:
    src = _reshape_onnx(tmp_path / "baked.onnx")
    np.savez(tmp_path / "v.npz", image=np.random.default_rng(0).standard_normal((4, 4, 16)).astype(np.float32))
    opts = dict(source=str(src), out_dir=tmp_path / "b", targets=(Engine.ONNXRUNTIME, Engine.OPENVINO), precisions=FP32,
                validation=str(tmp_path / "v.npz"))
    with pytest.raises(SpecializationError) as ei:
        compile_model(CompileOptions(**opts))
    msg = str(ei.value)
    assert "dynamic dim image:2 ('width')" in msg and "ONNX Runtime fails at width=32" in msg and "Reshape" in msg
    res = compile_model(CompileOptions(**opts, allow_static=("width",)))
    assert res.exit_code == 0, [a["error"] for a in res.manifest["artifacts"]]
    assert res.manifest["io"]["inputs"][0]["shape"] == ["batch", 4, 16]
    assert all(a["io"]["inputs"][0]["shape"][2] == 16 for a in res.manifest["artifacts"])


def test_onnx_output_dims_follow_the_inputs(tmp_path: Path) -> None:
    src = _identity_onnx(tmp_path / "id.onnx")
    np.savez(tmp_path / "v.npz", x=np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32))
    res = compile_model(CompileOptions(source=str(src), out_dir=tmp_path / "b", targets=(Engine.ONNXRUNTIME,),
                                       precisions=FP32, validation=str(tmp_path / "v.npz")))
    m = res.manifest
    assert res.exit_code == 0, [a["error"] for a in m["artifacts"]]
    assert m["io"]["outputs"][0]["shape"] == ["batch", "n"]
    assert m["artifacts"][0]["io"]["outputs"][0]["shape"] == ["batch", "n"]
    assert m["artifacts"][0]["verified_sizes"] == {"batch": [3, 8], "n": [3, 4]}
