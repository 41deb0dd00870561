"""Source loading and the reference ONNX export: names, dtypes, dynamic axes, failure stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolchain.compile.export import export_reference
from toolchain.compile.source import SourceKind, load_source
from toolchain.errors import ExportError, SourceError

pytestmark = pytest.mark.slow


def test_multi_input_int64_dynamic_seq_names_survive(seq_factory: Path, tmp_path: Path) -> None:
    import runtime

    src = load_source(f"{seq_factory}:build")
    ref = export_reference(src, out_dir=tmp_path / "ref")
    assert [(s.name, s.dtype, s.shape) for s in ref.inputs] == [
        ("input_ids", "int64", ("batch", "seq")), ("attention_mask", "float32", ("batch", "seq"))]
    assert [o.name for o in ref.outputs] == ["logits", "hidden"]
    assert ref.opset == 18
    # the exported graph really takes other batch sizes and sequence lengths
    import torch

    with runtime.open_model(ref.model_path) as s:
        for b, t in [(1, 3), (4, 19)]:
            ids = np.random.default_rng(0).integers(0, 50, (b, t)).astype(np.int64)
            mask = np.ones((b, t), np.float32)
            got = s.run({"input_ids": ids, "attention_mask": mask})
            with torch.no_grad():
                want = src.module(torch.from_numpy(ids), torch.from_numpy(mask))
            np.testing.assert_allclose(got["logits"], want[0].numpy(), atol=1e-5)
            assert got["hidden"].shape == (b, t, 16)


def test_data_dependent_branch_names_stage_and_line(tmp_path: Path, write) -> None:
    f = write(tmp_path, "branchy.py", """
        import torch
        class Branchy(torch.nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x * 2
                return x - 1
        def build():
            return torch.nn.Sequential(torch.nn.Linear(4, 4), Branchy()), (torch.randn(1, 4),)
    """)
    with pytest.raises(ExportError) as ei:
        export_reference(load_source(f"{f}:build"), out_dir=tmp_path / "ref")
    msg = str(ei.value)
    assert "stage 'torch.export'" in msg
    assert "branchy.py" in msg and "if x.sum() > 0" in msg
    assert "module 1 (Branchy)" in msg
    assert not (tmp_path / "ref" / "model.onnx").exists()


def test_op_without_onnx_translation_names_op_and_stage(tmp_path: Path, write) -> None:
    f = write(tmp_path, "customop.py", """
        import torch
        @torch.library.custom_op("edgeship_test::mystery", mutates_args=())
        def mystery(x: torch.Tensor) -> torch.Tensor:
            return x.clone()
        @mystery.register_fake
        def _(x):
            return torch.empty_like(x)
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 4)
            def forward(self, x):
                return mystery(self.lin(x))
        def build():
            return M(), (torch.randn(1, 4),)
    """)
    with pytest.raises(ExportError) as ei:
        export_reference(load_source(f"{f}:build"), out_dir=tmp_path / "ref")
    msg = str(ei.value)
    assert "stage 'onnx translation'" in msg
    assert "edgeship_test.mystery" in msg


def test_pt2_source(tiny_factory: Path, tmp_path: Path) -> None:
    import torch

    src = load_source(f"{tiny_factory}:build")
    ep = torch.export.export(src.module, src.example_inputs)
    torch.export.save(ep, tmp_path / "tiny.pt2")
    pt2 = load_source(str(tmp_path / "tiny.pt2"))
    assert pt2.kind is SourceKind.PT2 and pt2.name == "tiny"
    ref = export_reference(pt2, out_dir=tmp_path / "ref")
    assert [s.dtype for s in ref.inputs] == ["float32"]
    assert ref.inputs[0].shape == (1, 3, 8, 8)


def test_factory_errors_are_source_errors(tmp_path: Path, write) -> None:
    with pytest.raises(SourceError, match="not found"):
        load_source(str(tmp_path / "nope.py") + ":build")
    f = write(tmp_path, "bad.py", """
        import torch
        def build():
            return torch.nn.Linear(2, 2), (torch.randn(1, 2),), {"input_name": ["x"]}
        def boom():
            raise RuntimeError("weights missing")
    """)
    with pytest.raises(SourceError, match="unknown factory option.*input_name"):
        load_source(f"{f}:build")
    with pytest.raises(SourceError, match="weights missing"):
        load_source(f"{f}:boom")
    with pytest.raises(SourceError, match="no callable 'nothere'"):
        load_source(f"{f}:nothere")
    with pytest.raises(SourceError, match="unknown reference model"):
        load_source("ref:alexnet")


def test_pt2_program_builds_for_ort_and_tflite(tiny_factory: Path, tmp_path: Path) -> None:
    """A saved program (static batch 1) goes through export, verification per sample, and the
    PyTorch-based TFLite converter (which gets a module that tolerates .eval())."""
    import torch

    from runtime.spec import Engine
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision

    src = load_source(f"{tiny_factory}:build")
    torch.export.save(torch.export.export(src.module, src.example_inputs), tmp_path / "prog.pt2")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32))
    res = compile_model(CompileOptions(source=str(tmp_path / "prog.pt2"), out_dir=tmp_path / "b",
                                       targets=(Engine.ONNXRUNTIME, Engine.TFLITE),
                                       precisions=(Precision.FP32, Precision.INT8), calibration=str(tmp_path / "c.npz")))
    assert res.exit_code == 0, [a["error"] for a in res.manifest["artifacts"]]
    assert res.manifest["model"]["source_kind"] == "pt2"
    assert {a["id"] for a in res.manifest["artifacts"]} == {"onnxruntime-fp32", "onnxruntime-int8", "tflite-fp32", "tflite-int8"}


def test_factory_file_with_dataclass_and_factoryresult(tmp_path: Path, write) -> None:
    f = write(tmp_path, "dc.py", """
        from __future__ import annotations
        from dataclasses import dataclass
        import torch
        from toolchain.compile import FactoryResult

        @dataclass(frozen=True)
        class Cfg:
            hidden: int = 8

        def build(hidden: int = 8):
            cfg = Cfg(hidden)
            m = torch.nn.Sequential(torch.nn.Linear(4, cfg.hidden), torch.nn.ReLU())
            return FactoryResult(module=m, example_inputs=torch.randn(1, 4), input_names=("features",))
    """)
    src = load_source(f"{f}:build", factory_kwargs={"hidden": 6})
    assert src.input_names == ("features",) and src.example_inputs[0].shape == (1, 4)
    assert src.module[0].out_features == 6 and not src.module.training
