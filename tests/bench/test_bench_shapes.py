"""`edgeship bench` and the shapes of real models: a dynamic dim without a size or that breaks
at the size given stops the run (exit 2, naming the input and axis) instead of a failed cell;
``--input-shape`` gives sizes as in `edgeship compile`; a build's manifest batch axes reach
the cell (an input batched on axis 1, like Silero VAD's ``state [2, N, 128]``). Tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.bench.spec import RunLength
from runtime.fsutil import file_entry, sha256_file
from toolchain.bench import api, plan, result as result_mod
from toolchain.bench.errors import BenchInputError

FAST = ["--min-iters", "20", "--min-duration", "0", "--warmup-iters", "1", "--warmup-s", "0", "-q"]
TINY = RunLength(warmup_min_iters=1, warmup_min_s=0.0, min_iters=20, min_duration_s=0.0,
                 max_duration_s=5.0, cooldown_s=0.0)


def _main(argv):
    from toolchain.cli import main

    return main(argv)


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def seq_onnx(tmp_path_factory) -> Path:
    """x [batch, L] -> y = x reshaped to [batch, 2, L/2]: L is a dynamic dim that takes even sizes only."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([0, 2, -1], np.int64), "shape")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "seq",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, None])],
                          initializer=[shape])
    return _save(g, tmp_path_factory.mktemp("shapes") / "seq.onnx")


def test_an_unsized_dynamic_dim_stops_with_exit_2_naming_input_axis_and_flag(seq_onnx, tmp_path, capsys):
    out = tmp_path / "o"
    assert _main(["bench", str(seq_onnx), "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "input 'x'" in err and "dynamic dim(s) 1 (L)" in err and "--input-shape x=1,N" in err
    assert "FAILED" not in err and not out.exists()  # nothing written, no failed-cell report


def test_input_shape_sizes_the_dynamic_dim(seq_onnx, tmp_path):
    out = tmp_path / "o"
    assert _main(["bench", str(seq_onnx), "-o", str(out), "--input-shape", "x=1,6", "--batch", "1,2", *FAST]) == 0
    res = result_mod.load(out / "result.json")
    shapes = sorted(tuple(c["inputs"]["shapes"]["x"]) for c in res["cells"])
    assert shapes == [(1, 6), (2, 6)]  # the batch axis takes --batch, L the given 6
    assert res["settings"]["input_shapes"] == {"x": [1, 6]}


def test_a_dynamic_dim_that_breaks_at_the_given_size_stops_with_exit_2(seq_onnx, tmp_path, capsys):
    out = tmp_path / "o"
    assert _main(["bench", str(seq_onnx), "-o", str(out), "--input-shape", "x=1,5", *FAST]) == 2
    err = capsys.readouterr().err
    assert "fails at x:0 (batch)=1, x:1 (L)=5" in err and "--input-shape" in err
    assert not out.exists()


@pytest.mark.parametrize("flag, match", [
    ("y=1,4", "the model has no input 'y'"),
    ("x=1,2,4", "rank 3, the model's input is"),
    ("x=1,two", "expected input=d0,d1,..."),         # compile's parser, reused
])
def test_a_bad_input_shape_is_bad_input(seq_onnx, tmp_path, capsys, flag, match):
    assert _main(["bench", str(seq_onnx), "-o", str(tmp_path / "o"), "--input-shape", flag, *FAST]) == 2
    assert match in capsys.readouterr().err and not (tmp_path / "o").exists()


def _state_build(root: Path, *, batch_axis_in_manifest: bool = True) -> Path:
    """A build whose model takes x [N, 4] and state [2, ?, 3] (batch on axis 1, an unnamed dim as in
    Silero VAD's state, so only the manifest says it is the batch): y = x summed with state;
    validation data stores state with its batch axis first."""
    from onnx import TensorProto, helper, numpy_helper

    b = root / "statebuild"
    perm = [helper.make_node("Transpose", ["state"], ["st"], perm=[1, 0, 2]),
            helper.make_node("ReduceSum", ["st", "axes12"], ["s"], keepdims=0),
            helper.make_node("ReduceSum", ["x", "axes1"], ["xs"], keepdims=0),
            helper.make_node("Add", ["xs", "s"], ["y"])]
    g = helper.make_graph(perm, "state",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
                          initializer=[numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
                                       numpy_helper.from_array(np.array([1], np.int64), "axes1")])
    _save(g, b / "onnxruntime-fp32" / "model.onnx")
    (b / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(b / "data" / "validation.npz", x=rng.standard_normal((8, 4)).astype(np.float32),
             state=rng.standard_normal((8, 2, 3)).astype(np.float32))  # samples along axis 0
    d = b / "onnxruntime-fp32"
    files = [file_entry(d, p) for p in sorted(d.iterdir())]
    inputs = [{"name": "x", "dtype": "float32", "shape": ["N", 4], "batch_axis": 0},
              {"name": "state", "dtype": "float32", "shape": [2, None, 3], "batch_axis": 1}]
    if not batch_axis_in_manifest:
        inputs = [{k: v for k, v in i.items() if k != "batch_axis"} for i in inputs]
    manifest = {
        "schema_version": 1,
        "model": {"name": "state", "source": "tests", "source_kind": "onnx", "opset": 17,
                  "metadata": {"task": "regress"}},
        "io": {"inputs": inputs, "outputs": [{"name": "y", "dtype": "float32", "shape": ["N"]}]},
        "validation": {"file": "data/validation.npz", "sha256": sha256_file(b / "data" / "validation.npz"),
                       "samples": 8, "labels": False},
        "status": "ok",
        "artifacts": [{"id": "onnxruntime-fp32", "engine": "onnxruntime", "precision": "fp32", "status": "ok",
                       "error": None, "dir": "onnxruntime-fp32", "model_file": "model.onnx", "files": files,
                       "size_bytes": sum(f["bytes"] for f in files), "verification": {"passed": True}}],
    }
    (b / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return b


def test_a_build_feeds_inputs_at_the_manifests_batch_axis(tmp_path):
    b = _state_build(tmp_path)
    src = plan.read_source(b)
    assert src.batch_axes == {"x": 0, "state": 1}
    cfg = api.make_config(batches=(1, 2), run_length=TINY)
    res = api.bench(b, config=cfg, out_dir=tmp_path / "o", progress=None)
    assert all(c["status"] == "ok" for c in res["cells"]), [c.get("error") for c in res["cells"]]
    io = {c["batch"]: c["inputs"] for c in res["cells"]}
    assert io[2]["source"] == "validation"
    # without the manifest's axes the same data is refused (state would have no batch axis)
    old = _state_build(tmp_path / "old", batch_axis_in_manifest=False)
    res = api.bench(old, config=api.make_config(run_length=TINY), out_dir=tmp_path / "o2", progress=None)
    assert res["cells"][0]["status"] == "error" and "'state'" in res["cells"][0]["errors"][0]["message"]


def test_input_shape_on_a_build_with_validation_data_is_refused(tmp_path):
    b = _state_build(tmp_path)
    cfg = api.make_config(run_length=TINY, input_shapes={"x": (1, 4)})
    with pytest.raises(BenchInputError, match="has validation data"):
        api.bench(b, config=cfg, out_dir=tmp_path / "o", progress=None)
    assert not (tmp_path / "o").exists()


def test_stop_reason_is_pure_and_spares_a_builds_failing_artifact():
    build = plan.Source(kind="build", path="b", targets=())
    single = plan.Source(kind="model_file", path="m.onnx", targets=())
    dyn = {"status": "error", "error": {"type": "DynamicDimError", "message": "fails at x:1", "bad_input": True}}
    unsized = {"status": "error", "error": {"type": "UnsizedDimError", "message": "no size", "bad_input": True}}
    engine = {"status": "error", "error": {"type": "InferenceError", "message": "boom", "bad_input": False}}
    assert api.stop_reason(dyn, single) == "fails at x:1" and api.stop_reason(dyn, build) is None
    assert api.stop_reason(unsized, build) == "no size"
    assert api.stop_reason(engine, single) is None and api.stop_reason({"status": "ok"}, single) is None


def test_a_filter_that_matches_nothing_names_the_value_and_what_the_build_has(tmp_path):
    b = _state_build(tmp_path)
    with pytest.raises(BenchInputError, match=r"--engine 'openvno' \(it has onnxruntime\)"):
        api.bench(b, config=api.make_config(run_length=TINY, engines=("openvno",)), out_dir=tmp_path / "o",
                  progress=None)
    with pytest.raises(BenchInputError, match=r"--artifact 'onnxruntime-int9' \(it has onnxruntime-fp32\)"):
        api.bench(b, config=api.make_config(run_length=TINY, artifacts=("onnxruntime-int9",)),
                  out_dir=tmp_path / "o", progress=None)
    assert not (tmp_path / "o").exists()
