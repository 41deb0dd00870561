"""Calibration/validation data: formats, checks before any work, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.spec import TensorSpec
from toolchain.compile.data import check_arrays, load_arrays, load_sample_set, random_sample_set
from toolchain.compile.samples import Layout
from toolchain.errors import DataError

INPUTS = (TensorSpec("image", "float32", ("batch", 1, 8, 8)),)
SEQ_INPUTS = (TensorSpec("input_ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "float32", ("batch", "seq")))


def test_npz_npy_dir_and_callable(tmp_path: Path, write) -> None:
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "a.npz", image=x[:4], __labels__=np.arange(4))
    np.save(tmp_path / "one.npy", x)
    d = tmp_path / "dir"
    d.mkdir()
    np.savez(d / "0.npz", image=x[:2])
    np.savez(d / "1.npz", image=x[2:])
    f = write(tmp_path, "mydata.py", """
        import numpy as np
        def get():
            return [{"image": np.zeros((2, 1, 8, 8), np.float32)}, {"image": np.ones((3, 1, 8, 8), np.float32)}]
    """)
    ss = load_sample_set(str(tmp_path / "a.npz"), inputs=INPUTS, role="validation")
    assert len(ss) == 4 and list(ss.labels) == [0, 1, 2, 3] and ss.samples[0]["image"].shape == (1, 1, 8, 8)
    assert len(load_sample_set(str(tmp_path / "one.npy"), inputs=INPUTS, role="calibration")) == 6
    assert len(load_sample_set(str(d), inputs=INPUTS, role="calibration")) == 6
    cb = load_sample_set(f"{f}:get", inputs=INPUTS, role="calibration", limit=4)
    assert len(cb) == 4 and cb.samples[3]["image"].max() == 1.0
    # the hash depends on content
    a = load_sample_set(str(tmp_path / "one.npy"), inputs=INPUTS, role="c").sha256
    np.save(tmp_path / "one.npy", x + 1)
    assert load_sample_set(str(tmp_path / "one.npy"), inputs=INPUTS, role="c").sha256 != a


@pytest.mark.parametrize("arrays, needle", [
    ({"img": np.zeros((2, 1, 8, 8), np.float32)}, "missing ['image']; unexpected ['img']"),
    ({"image": np.zeros((2, 1, 8, 8), np.float64)}, "float64[2, 1, 8, 8], the model expects float32[N, 1, 8, 8] (N samples along axis 0)"),
    ({"image": np.zeros((2, 8, 8), np.float32)}, "float32[2, 8, 8], the model expects float32[N, 1, 8, 8]"),
    ({"image": np.zeros((2, 1, 8, 8), np.float32), "__labels__": np.zeros(3, np.int64)}, "labels must be 2 integers"),
])
def test_mismatches_say_what_was_expected(arrays, needle) -> None:
    with pytest.raises(DataError) as ei:
        check_arrays(arrays, INPUTS, role="calibration", source="x.npz")
    assert needle in str(ei.value) and "calibration data x.npz" in str(ei.value)


def test_symbolic_seq_accepts_any_length_and_npy_needs_single_input() -> None:
    ok = {"input_ids": np.zeros((3, 11), np.int64), "attention_mask": np.ones((3, 11), np.float32)}
    check_arrays(ok, SEQ_INPUTS, role="validation", source="s.npz")
    with pytest.raises(DataError, match="only fits a single-input model"):
        check_arrays({"": np.zeros((3, 11), np.int64)}, SEQ_INPUTS, role="validation", source="s.npy")
    with pytest.raises(DataError, match="different sample counts"):
        check_arrays({"input_ids": np.zeros((3, 4), np.int64), "attention_mask": np.ones((2, 4), np.float32)},
                     SEQ_INPUTS, role="validation", source="s.npz")
    with pytest.raises(DataError, match=r"dim 'seq' is 4 in input 'input_ids' but 6 in input 'attention_mask'"):
        check_arrays({"input_ids": np.zeros((2, 4), np.int64), "attention_mask": np.ones((2, 6), np.float32)},
                     SEQ_INPUTS, role="validation", source="s.npz")
    r = random_sample_set(SEQ_INPUTS, n=3, example_shapes={"input_ids": (1, 5), "attention_mask": (1, 5)})
    assert r.random and r.samples[0]["input_ids"].dtype == np.int64
    assert r.samples[0]["input_ids"].shape == (1, 5) and len(r) == 3


def test_missing_file() -> None:
    with pytest.raises(DataError, match="not found"):
        load_arrays("/nonexistent/calib.npz")


@pytest.mark.slow
def test_cli_refuses_mismatched_calibration_before_any_work(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    np.savez(tmp_path / "calib.npz", pixels=np.zeros((4, 3, 9, 9), np.float32))
    out = tmp_path / "build"
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime",
                 "--calibration", str(tmp_path / "calib.npz")])
    assert r.returncode == 2, r.stderr
    assert "input 'pixels' is float32[4, 3, 9, 9], the model expects float32[N, 3, 8, 8]" in r.stderr
    assert "exporting" not in r.stderr  # refused before the export started
    assert not out.exists()


@pytest.mark.slow
def test_int8_without_calibration_is_refused_and_random_needs_flag(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "build"
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime",
                 "--precisions", "int8-static"])
    assert r.returncode == 2 and "needs calibration data" in r.stderr and "--random-calibration" in r.stderr
    assert not out.exists()
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime",
                 "--precisions", "int8-static", "--random-calibration", "--quiet"])
    assert r.returncode == 0, r.stderr
    assert "WARNING: calibrating int8 on RANDOM data" in r.stderr


def test_random_data_takes_symbolic_dims_from_the_example_inputs() -> None:
    """Random calibration/validation data must fit artifacts converted at the example's shapes (TFLite):
    a shared ``seq`` dim takes the example's length, not a generic default."""
    from types import SimpleNamespace

    from toolchain.compile import pipeline

    src = SimpleNamespace(validation=None, calibration=None,
                          example_inputs=(np.zeros((1, 12), np.int64), np.zeros((1, 12), np.float32)))
    opts = SimpleNamespace(validation=None, labels=None, max_validation_samples=None, calibration=None,
                           random_calibration=True, quant=SimpleNamespace(calibration_samples=8))
    layout = Layout.of(SEQ_INPUTS)
    shapes = {"input_ids": (1, 12), "attention_mask": (1, 12)}
    val = pipeline._validation(opts, src, SEQ_INPUTS, layout, shapes, None, lambda _msg: None)
    from runtime.spec import Engine
    from toolchain.compile.verify import Precision

    int8 = ((Engine.ONNXRUNTIME, Precision.INT8),)
    cal = pipeline._calibration(opts, src, SEQ_INPUTS, layout, shapes, int8, lambda _msg: None)
    for ss in (val, cal):
        assert ss.random and ss.samples[0]["input_ids"].shape == (1, 12)
        assert ss.samples[0]["attention_mask"].shape == (1, 12)
    # no int8 asked for: no random calibration set, and no warning about one
    warned = []
    fp32 = ((Engine.ONNXRUNTIME, Precision.FP32),)
    assert pipeline._calibration(opts, src, SEQ_INPUTS, layout, shapes, fp32, warned.append) is None
    assert warned == []


def test_reference_run_failure_on_the_data_is_one_line_naming_the_user_line() -> None:
    """Token ids beyond the embedding table: a DataError naming the samples and the user's line,
    not a torch traceback."""
    from types import SimpleNamespace

    import torch

    from toolchain.compile import export
    from toolchain.compile.source import SourceKind

    class Emb(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, ids):
            return self.emb(ids).mean(1)

    src = SimpleNamespace(spec="m.py:build", kind=SourceKind.FACTORY, module=Emb().eval(), is_torch=True)
    ins = (TensorSpec("ids", "int64", ("batch", "seq")),)
    outs = (TensorSpec("y", "float32", ("batch", 4)),)
    layout = Layout.of(ins)
    ok = export.reference_outputs(src, Path("unused.onnx"), ins, outs, {"ids": np.ones((3, 5), np.int64)}, layout=layout)
    assert ok["y"].shape == (3, 4)
    with pytest.raises(DataError) as ei:
        export.reference_outputs(src, Path("unused.onnx"), ins, outs, {"ids": np.full((3, 5), 50, np.int64)},
                                 layout=layout)
    msg = str(ei.value)
    assert "m.py:build" in msg and "samples 0..2" in msg and "IndexError" in msg
    assert "test_data.py" in msg and "in forward" in msg and "\n" not in msg


@pytest.mark.parametrize("flag, value", [("--calibration-samples", "0"), ("--max-validation-samples", "0"),
                                         ("--max-accuracy-drop", "-1"), ("--atol", "-0.5"), ("--min-cosine", "2")])
def test_numeric_options_out_of_range_are_usage_errors(flag, value, tmp_path: Path, capsys) -> None:
    from toolchain.cli import main

    out = tmp_path / "build"
    assert main(["compile", "ref:digits", "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"edgeship compile: error: {flag} " in err and "must be" in err
    assert not out.exists()
