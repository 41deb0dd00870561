"""Shapes as real models have them, through `edgeship compile`: Silero VAD (unnamed dims, a
state tensor whose fixed 2 is not a batch, an int64 scalar), PP-OCR ('?' on H and W: two
independent dims), a fixed-batch export caught up front, user names that collide with
internal nodes, and factory errors that show the user's line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corpus_files import corpus_file
from runtime.spec import Engine
from toolchain.compile.options import CompileOptions, UsageError
from toolchain.compile.pipeline import compile_model
from toolchain.compile.verify import Precision
from toolchain.errors import DataError, SourceError

ORT = (Engine.ONNXRUNTIME,)


def _vad() -> Path:
    return corpus_file("silero-vad", "silero_vad", "data/silero_vad.onnx")


def _vad_data(path: Path, n: int = 6, *, state_batched: bool = True) -> str:
    t = np.arange(512) / 16000
    rng = np.random.default_rng(0)
    audio = np.stack([0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(512) for i in range(n)])
    state = np.zeros((n, 2, 128) if state_batched else (n, 2, 1, 128), np.float32)
    np.savez(path, input=audio.astype(np.float32), state=state, sr=np.full((n,), 16000, np.int64))
    return str(path)


@pytest.mark.slow
def test_silero_vad_state_and_scalar_compile_and_verify(tmp_path: Path) -> None:
    data = _vad_data(tmp_path / "vad.npz")
    res = compile_model(CompileOptions(source=str(_vad()), out_dir=tmp_path / "b", targets=ORT,
                                       precisions=(Precision.FP32,), validation=data, batch_axes={"state": 1}))
    m = res.manifest
    assert res.exit_code == 0, [a["error"] for a in m["artifacts"]]
    io = {s["name"]: s for s in m["io"]["inputs"]}
    assert io["state"]["shape"] == [2, None, 128] and io["state"]["batch_axis"] == 1  # the fixed 2 stays fixed
    assert io["sr"]["shape"] == [] and io["sr"]["batch_axis"] is None
    assert m["model"]["metadata"]["task"] == "regress"
    for a in m["artifacts"]:
        assert a["verification"]["fidelity"]["metric"] == "rel_max_abs"
        assert len(a["verified_sizes"]["input:1"]) == 2  # the audio length at a second size too
    with np.load(res.build_dir / "data" / "validation.npz") as z:
        assert z["state"].shape == (6, 2, 128) and z["sr"].shape == (6,)


def test_silero_data_messages_do_not_contradict_themselves(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 512), np.float32), state=np.zeros((4, 2, 128), np.float32),
             sr=np.full((4,), 16000.0, np.float32))
    opts = dict(source=str(_vad()), out_dir=tmp_path / "b", targets=ORT, precisions=(Precision.FP32,), validation=str(bad))
    with pytest.raises(DataError) as ei:
        compile_model(CompileOptions(**opts))
    msg = str(ei.value)  # without --batch-axis state:1, a sample carries the whole state tensor
    assert "input 'state' is float32[4, 2, 128], the model expects float32[N, 2, ?, 128]" in msg
    assert "which has no batch axis" in msg
    with pytest.raises(DataError) as ei:
        compile_model(CompileOptions(**opts, batch_axes={"state": 1}))
    assert "input 'sr' is float32[4], the model expects int64[N] (N samples along axis 0; the model input is a scalar)" \
        in str(ei.value)


def test_ppocr_question_mark_dims_are_independent_and_random_data_needs_a_size(tmp_path: Path) -> None:
    cls = corpus_file("rapidocr-onnxruntime", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    base = dict(source=str(cls), out_dir=tmp_path / "b", targets=ORT, precisions=(Precision.FP32,))
    with pytest.raises(DataError) as ei:
        compile_model(CompileOptions(**base))
    assert "no size is known for dynamic dim(s) 2 (?), 3 (?)" in str(ei.value)
    assert "--input-shape x=1,3,SIZE,SIZE" in str(ei.value)
    np.savez(tmp_path / "lines.npz", x=np.random.default_rng(0).random((4, 3, 48, 192), dtype=np.float32))
    res = compile_model(CompileOptions(**base, validation=str(tmp_path / "lines.npz")))  # 48x192: H != W
    a = res.manifest["artifacts"][0]
    assert res.exit_code == 0, a["error"]
    assert res.manifest["model"]["metadata"]["task"] == "classify"
    assert a["verified_sizes"]["x:2"] == [48, 64] and a["verified_sizes"]["x:3"] == [192, 256]


@pytest.mark.slow
def test_exact_openvino_artifact_on_a_near_zero_probability_map_passes(tmp_path: Path) -> None:
    det = corpus_file("rapidocr-onnxruntime", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")
    res = compile_model(CompileOptions(source=str(det), out_dir=tmp_path / "b", targets=(Engine.OPENVINO,),
                                       precisions=(Precision.FP32,), input_shapes={"x": (1, 3, 64, 64)}))
    a = res.manifest["artifacts"][0]
    assert res.exit_code == 0, a["error"]
    f = a["verification"]["fidelity"]
    assert res.manifest["model"]["metadata"]["task"] == "segment" and f["metric"] == "rel_max_abs"
    assert f["value"] <= 1e-3 and f["passed"]


def test_fixed_batch_export_is_caught_before_any_work(tmp_path: Path, write) -> None:
    f = write(tmp_path, "b6.py", """
        import torch
        def build():
            return torch.nn.Linear(8, 2).eval(), (torch.randn(6, 8),), {"input_names": ["feats"]}
    """)
    with pytest.raises(UsageError) as ei:
        compile_model(CompileOptions(source=f"{f}:build", out_dir=tmp_path / "b", targets=ORT))
    msg = str(ei.value)
    assert "example inputs have batch 6" in msg and "--dynamic-axis feats:0:batch" in msg and "--batch-axis feats:none" in msg
    assert not (tmp_path / "b").exists()
    res = compile_model(CompileOptions(source=f"{f}:build", out_dir=tmp_path / "b", targets=ORT,
                                       precisions=(Precision.FP32,), batch_axes={"feats": None}))
    assert res.exit_code == 0 and res.manifest["io"]["inputs"][0]["batch_axis"] is None


def test_user_output_name_survives_a_colliding_internal_node(tmp_path: Path, write) -> None:
    f = write(tmp_path, "emb.py", """
        import torch
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = torch.nn.Embedding(10, 4)
                self.linear = torch.nn.Linear(4, 4)
            def forward(self, ids):
                return torch.nn.functional.normalize(self.linear(self.embedding(ids)).mean(1), dim=-1)
        def build():
            return M().eval(), (torch.randint(0, 10, (1, 5)),), {
                "input_names": ["linear"], "output_names": ["embedding"],
                "dynamic_axes": {"linear": {0: "batch", 1: "seq"}}}
    """)
    np.savez(tmp_path / "ids.npz", linear=np.random.default_rng(0).integers(0, 10, (4, 5)))
    res = compile_model(CompileOptions(source=f"{f}:build", out_dir=tmp_path / "b", targets=ORT,
                                       precisions=(Precision.FP32,), validation=str(tmp_path / "ids.npz")))
    a = res.manifest["artifacts"][0]
    assert res.exit_code == 0, a["error"]
    assert [s["name"] for s in a["io"]["inputs"]] == ["linear"] and [s["name"] for s in a["io"]["outputs"]] == ["embedding"]
    assert res.manifest["model"]["metadata"]["task"] == "embed"


def test_factory_error_shows_the_users_line_and_verbose_the_whole_traceback(tmp_path: Path, write, run_cli) -> None:
    f = write(tmp_path, "boom.py", """
        def helper():
            raise ValueError("weights file missing")
        def build():
            return helper()
    """)
    with pytest.raises(SourceError) as ei:
        compile_model(CompileOptions(source=f"{f}:build", out_dir=tmp_path / "b"))
    msg = str(ei.value)
    assert "the factory raised ValueError: weights file missing" in msg
    assert 'boom.py", line 3, in helper' in msg and 'raise ValueError("weights file missing")' in msg
    assert "toolchain/compile" not in msg  # edgeship's own frames are not the user's
    r = run_cli(["compile", f"{f}:build", "--out", str(tmp_path / "c"), "--verbose"])
    assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr and "source.py" in r.stderr
