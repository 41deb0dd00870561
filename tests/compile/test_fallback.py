"""Accuracy-aware int8: the pure ranking/search, and a planted culprit found on every engine.

The planted model has one activation channel 5000x larger than the others that the next
layer ignores: per-tensor int8 of that activation wipes out every other channel, so int8
misses a tight budget on every engine until that layer (``b``) is kept in float.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain.compile.fallback import FidelityBudget, Judgement, rank_layers, relative_error, search

PLANTED = '''
import numpy as np
import torch


class Planted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(16, 64)
        self.b = torch.nn.Linear(64, 64)
        self.c = torch.nn.Linear(64, 8)
        with torch.no_grad():
            self.b.weight[:, 0] = 0.0  # b ignores the outlier channel
        scale = torch.ones(64)
        scale[0] = 5000.0
        self.register_buffer("scale", scale)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)) * self.scale)))


def _x(seed, n):
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def build():
    from toolchain.compile.source import FactoryResult

    return FactoryResult(module=Planted().eval(), example_inputs=(torch.from_numpy(_x(0, 1)),),
                         input_names=("x",), output_names=("y",), dynamic_axes={"x": {0: "batch"}},
                         calibration=lambda: {"x": _x(1, 32)}, validation=lambda: {"x": _x(2, 24)})
'''


def _j(passed: bool) -> Judgement:
    return Judgement(passed=passed, figures={"cosine_min": 1.0 if passed else 0.0}, failures=() if passed else ("x",))


def test_relative_error() -> None:
    assert relative_error(np.ones(4), np.ones(4)) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([3.0, 4.0]), np.array([3.0, 4.5])) == pytest.approx(0.1)
    assert np.isnan(relative_error(np.ones(3), np.ones(4)))


def test_rank_layers_charges_the_layer_where_error_appears() -> None:
    """a -> b -> c: error 0.01 after a, 0.5 after b, 0.52 after c: b added it, c inherited it."""
    ref = {t: [np.ones(8)] for t in ("x", "ta", "tb", "tc")}
    got = {"x": [np.ones(8)], "ta": [np.ones(8) * 1.01], "tb": [np.ones(8) * 1.5], "tc": [np.ones(8) * 1.52]}
    layers = [("a", ["x"], ["ta"]), ("b", ["ta"], ["tb"]), ("c", ["tb"], ["tc"]), ("gone", ["tc"], ["missing"])]
    ranked = rank_layers(layers, ref, got)
    assert [n for n, _ in ranked] == ["b", "c", "a"]  # "gone" has no comparable output
    assert ranked[0][1] == pytest.approx(0.49)
    assert ranked[1][1] == pytest.approx(0.02)


def test_rank_layers_looks_through_renamed_tensors() -> None:
    """ORT folds a ReLU into the Conv's Q/DQ: the Conv output has no int8 counterpart, so the
    ReLU is charged only what appeared since the last measured tensor."""
    ref = {t: [np.ones(8)] for t in ("x", "r1", "r2")}
    got = {"x": [np.ones(8)], "r1": [np.ones(8) * 1.2], "r2": [np.ones(8) * 1.3]}
    layers = [("conv1", ["x"], ["c1"]), ("relu1", ["c1"], ["r1"]), ("conv2", ["r1"], ["c2"]), ("relu2", ["c2"], ["r2"])]
    ranked = dict(rank_layers(layers, ref, got))
    assert ranked["relu1"] == pytest.approx(0.2) and ranked["relu2"] == pytest.approx(0.1)


def test_search_finds_the_fewest_top_layers() -> None:
    calls = []

    def trial(excluded):
        calls.append(list(excluded))
        return _j("l5" in excluded)

    ranked = [f"l{i}" for i in range(12)]
    layers, judged, trials = search(ranked, trial)
    assert layers == ranked[:6] and judged.passed
    assert [len(c) for c in calls] == [1, 2, 4, 8, 6, 5]  # doubling, then bisection
    assert trials == len(calls)


def test_search_bounded_when_nothing_passes() -> None:
    layers, judged, trials = search([f"l{i}" for i in range(100)], lambda ex: _j(False), max_trials=5)
    assert not judged.passed and trials == 5 and len(layers) == 16


def test_budget_runs_samples_as_verification_does() -> None:
    from toolchain.compile.artifacts import Checks
    from toolchain.compile.fidelity import Task
    from toolchain.compile.samples import Layout
    from toolchain.compile.verify import Precision, UserGates

    x = np.arange(10.0, dtype=np.float32)[:, None]
    checks = Checks(validation={"x": x}, labels=None, reference={"y": 2 * x}, reference_accuracy=None,
                    task=Task.REGRESS, gates=UserGates(), layout=Layout.LEADING)
    budget = FidelityBudget(checks=checks, precision=Precision.INT8, output_names=("y",))
    calls = []

    def run(feeds):
        calls.append(len(feeds["x"]))
        return {"y": 2 * feeds["x"]}

    out = budget.collect(run)
    assert calls == [10] and np.array_equal(out["y"], 2 * x)  # one chunk, as verification batches
    calls.clear()
    budget.collect(run, batched=False)
    assert calls == [1] * 10
    assert budget.judge(out).passed
    assert not budget.judge({"y": 2 * x + 5}).passed
    assert [f["x"].shape for f in budget.feeds(limit=3)] == [(1, 1)] * 3


@pytest.fixture(scope="module")
def planted_build(tmp_path_factory) -> dict:
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision, UserGates

    tmp = tmp_path_factory.mktemp("planted")
    (tmp / "planted.py").write_text(PLANTED)
    res = compile_model(CompileOptions(source=f"{tmp / 'planted.py'}:build", out_dir=tmp / "b",
                                       precisions=(Precision.INT8,), gates=UserGates(min_cosine=0.999)))
    return {a["id"]: a for a in res.manifest["artifacts"]}


@pytest.mark.slow
@pytest.mark.parametrize("aid, culprit", [("onnxruntime-int8", "node_linear_1"), ("openvino-int8", "node_linear_1"),
                                          ("tflite-int8", "inner.b")])
def test_planted_culprit_kept_in_float_on_every_engine(planted_build: dict, aid: str, culprit: str) -> None:
    a = planted_build[aid]
    assert a["status"] == "ok", a["error"]
    fb = a["recipe"]["fallback"]
    assert fb["enabled"] and not fb["initial"]["passed"] and fb["initial"]["cosine_min"] < 0.9
    assert fb["final"]["passed"] and fb["final"]["cosine_min"] >= 0.999
    assert culprit in fb["ranking"][0]["layer"]  # first divergence: the layer fed the outlier
    assert 1 <= fb["count"] < fb["candidates"]  # the fewest, not everything
    assert fb["layers"][0] == fb["ranking"][0]["layer"]
    assert a["verification"]["cosine_min"] >= 0.999  # the artifact itself, verified on its engine
    assert "latency_ms_p50" in fb
    assert any("kept in float" in line for line in a["recipe"]["summary"])


@pytest.mark.slow
def test_no_fallback_flag_reports_the_miss(tmp_path: Path, run_cli) -> None:
    (tmp_path / "planted.py").write_text(PLANTED)
    r = run_cli(["compile", f"{tmp_path / 'planted.py'}:build", "--out", str(tmp_path / "b"), "--targets", "onnxruntime",
                 "--precisions", "int8", "--min-cosine", "0.999", "--no-fallback", "--json"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    import json

    a = json.loads(r.stdout)["artifacts"][0]
    assert a["status"] == "gate_failed" and a["recipe"]["fallback"]["enabled"] is False
    assert a["recipe"]["nodes_to_exclude"] == []
    assert "fallback off (--no-fallback)" in r.stderr


def test_fallback_module_imports_nothing_heavy() -> None:
    code = ("import sys, toolchain.compile.fallback, toolchain.compile.onnxgraph, toolchain.models.corpus\n"
            "print([m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf') if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_bare_assertion_is_described_with_its_source_line() -> None:
    from toolchain.errors import describe

    def converter_internals():
        raise AssertionError  # what a bare `assert x` inside ORT raises (pytest would add a message)

    try:
        converter_internals()
    except AssertionError as e:
        text = describe(e)
    assert text.startswith("AssertionError with no message (at ") and "test_fallback.py" in text and "raise AssertionError" in text
    assert describe(ValueError("bad\nmore")) == "ValueError: bad"


@pytest.mark.slow
def test_int8_that_quantized_nothing_fails_naming_the_ops(tmp_path: Path) -> None:
    """A graph ORT's quantizer has nothing to quantize in (here: Abs, Exp) is no int8 artifact."""
    import onnx
    from onnx import TensorProto, helper

    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision

    g = helper.make_graph([helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Exp", ["a"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "absexp.onnx"))
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    res = compile_model(CompileOptions(source=str(tmp_path / "absexp.onnx"), out_dir=tmp_path / "b",
                                       targets=(__import__("runtime.spec", fromlist=["Engine"]).Engine.ONNXRUNTIME,),
                                       precisions=(Precision.INT8_STATIC,), calibration=str(tmp_path / "d.npz"),
                                       validation=str(tmp_path / "d.npz")))
    a = res.manifest["artifacts"][0]
    assert a["status"] == "failed"
    assert "quantized nothing" in a["error"] and "Abs x1" in a["error"] and "Exp x1" in a["error"]
