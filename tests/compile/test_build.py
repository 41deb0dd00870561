"""The build directory and every failure path: partial builds, missing extras, gates,
interrupted builds, rebuilds, external data, --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.fsutil import sha256_file
from runtime.spec import Engine
from toolchain.compile import registry
from toolchain.compile.options import CompileOptions
from toolchain.compile.pipeline import compile_model
from toolchain.compile.registry import ConverterEntry
from toolchain.compile.verify import Precision

pytestmark = pytest.mark.slow

HIDE_OPENVINO = "import sys\nsys.modules['openvino'] = None  # simulate: openvino not installed\n"


def _calib(tmp_path: Path) -> str:
    p = tmp_path / "calib.npz"
    np.savez(p, pixels=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    return str(p)


def _assert_manifest_consistent(build: Path) -> dict:
    m = json.loads((build / "manifest.json").read_text())
    for a in m["artifacts"]:
        for f in a.get("files", []):
            p = build / a["dir"] / f["path"]
            assert p.is_file() and p.stat().st_size == f["bytes"] and sha256_file(p) == f["sha256"]
    assert sha256_file(build / m["validation"]["file"]) == m["validation"]["sha256"]
    for f in m["reference"]["files"]:
        assert sha256_file(build / "reference" / f["path"]) == f["sha256"]
    return m


def test_missing_engine_extra_partial_build_exit_3(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "build"
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime,openvino",
                 "--precisions", "fp32", "--json", "--quiet"], prelude=HIDE_OPENVINO)
    assert r.returncode == 3, r.stderr
    m = json.loads(r.stdout)
    assert m["status"] == "partial"
    by = {a["id"]: a for a in m["artifacts"]}
    assert by["onnxruntime-fp32"]["status"] == "ok"
    ov = by["openvino-fp32"]
    assert ov["status"] == "failed" and "pip install 'edgeship[openvino]'" in ov["error"]
    assert "openvino-fp32 failed" in r.stderr and "edgeship[openvino]" in r.stderr
    assert not (out / "tiny" / "openvino-fp32").exists()
    _assert_manifest_consistent(out / "tiny")


def test_only_failed_targets_exit_1(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(tmp_path / "b"), "--targets", "openvino",
                 "--precisions", "fp32", "--quiet"], prelude=HIDE_OPENVINO)
    assert r.returncode == 1 and "edgeship[openvino]" in r.stderr


def test_missing_converter_module_is_a_failed_artifact(tiny_factory: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(registry.REGISTRY, Engine.OPENVINO, ConverterEntry(
        "toolchain.compile.no_such_converter:X", (Precision.FP32,), ()))
    res = compile_model(CompileOptions(source=f"{tiny_factory}:build", out_dir=tmp_path / "b",
                                       targets=(Engine.ONNXRUNTIME, Engine.OPENVINO), precisions=(Precision.FP32,)))
    assert res.exit_code == 3
    ov = [a for a in res.manifest["artifacts"] if a["engine"] == "openvino"][0]
    assert ov["status"] == "failed" and "no_such_converter is not available" in ov["error"]


def test_converter_failure_marks_only_that_artifact(tiny_factory: Path, tmp_path: Path, monkeypatch) -> None:
    from toolchain.compile import ort
    from toolchain.errors import ConversionError

    real = ort.OrtConverter.build

    def flaky(self, ctx, *, precision, out_dir):
        if precision == "fp16":
            (Path(out_dir) / "model.onnx").write_bytes(b"half-written")
            raise ConversionError("onnxruntime fp16: op Foo is not supported")
        return real(self, ctx, precision=precision, out_dir=out_dir)

    monkeypatch.setattr(ort.OrtConverter, "build", flaky)
    res = compile_model(CompileOptions(source=f"{tiny_factory}:build", out_dir=tmp_path / "b",
                                       targets=(Engine.ONNXRUNTIME,), precisions=(Precision.FP32, Precision.FP16)))
    assert res.exit_code == 3
    by = {a["id"]: a for a in res.manifest["artifacts"]}
    assert by["onnxruntime-fp16"]["error"] == "ConversionError: onnxruntime fp16: op Foo is not supported"
    assert not (res.build_dir / "onnxruntime-fp16").exists()  # the half-written folder is gone
    assert not list(res.build_dir.glob("*.partial"))
    _assert_manifest_consistent(res.build_dir)


def test_user_gates_fail_naming_artifact_and_figure(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "b"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime",
                 "--precisions", "fp32,int8-static", "--calibration", _calib(tmp_path), "--atol", "1e-6", "--quiet"],
                cwd=cwd)
    assert r.returncode == 1, r.stderr
    assert list(cwd.iterdir()) == []  # no augmented_model.onnx or other scratch in the cwd
    assert "onnxruntime-int8-static gate_failed" in r.stderr and "max_abs_error" in r.stderr and "> atol 1e-06" in r.stderr
    m = _assert_manifest_consistent(out / "tiny")
    assert m["status"] == "failed"
    by = {a["id"]: a for a in m["artifacts"]}
    assert by["onnxruntime-fp32"]["status"] == "ok"
    assert by["onnxruntime-int8-static"]["status"] == "gate_failed"


def test_accuracy_gate_without_labels_fails_clearly(tiny_factory: Path, tmp_path: Path) -> None:
    from toolchain.compile.verify import UserGates

    res = compile_model(CompileOptions(source=f"{tiny_factory}:build", out_dir=tmp_path / "b",
                                       targets=(Engine.ONNXRUNTIME,), precisions=(Precision.FP32,),
                                       gates=UserGates(max_accuracy_drop_pts=1.0)))
    assert res.exit_code == 1
    assert "no labels" in res.manifest["artifacts"][0]["error"]


def test_interrupted_build_leaves_no_bad_manifest_and_rebuild_is_clean(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "b"
    first = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime",
                     "--precisions", "fp32", "--quiet"])
    assert first.returncode == 0, first.stderr
    old = _assert_manifest_consistent(out / "tiny")
    # second build, killed (SIGKILL, no cleanup) while converting
    code = ("import sys\nfrom toolchain.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    p = subprocess.Popen([sys.executable, "-u", "-c", code, "compile", f"{tiny_factory}:build", "--out", str(out),
                          "--targets", "onnxruntime", "--precisions", "fp32,fp16,int8-dynamic"],
                         stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    for line in p.stderr:
        if "converting" in line or time.time() > deadline:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the old build is still complete and consistent; the leftover staging dir is hidden
    assert _assert_manifest_consistent(out / "tiny") == old
    assert [d.name for d in out.iterdir() if d.name.startswith(".tiny.staging-")]
    # a rebuild removes leftovers and replaces the old state completely
    again = run_cli(["compile", f"{tiny_factory}:build", "--out", str(out), "--targets", "onnxruntime",
                     "--precisions", "fp16", "--quiet"])
    assert again.returncode == 0, again.stderr
    assert sorted(d.name for d in out.iterdir()) == ["tiny"]
    m = _assert_manifest_consistent(out / "tiny")
    assert [a["id"] for a in m["artifacts"]] == ["onnxruntime-fp16"]
    assert not (out / "tiny" / "onnxruntime-fp32").exists()


def test_external_data_travels_with_every_artifact(tmp_path: Path, write) -> None:
    f = write(tmp_path, "wide.py", """
        import torch
        def build():
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
            return m.eval(), (torch.randn(1, 64),), {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}}
    """)
    calib = tmp_path / "x.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32))
    res = compile_model(CompileOptions(source=f"{f}:build", out_dir=tmp_path / "b", external_data=True,
                                       targets=(Engine.ONNXRUNTIME,), calibration=str(calib),
                                       precisions=(Precision.FP32, Precision.FP16, Precision.INT8_STATIC, Precision.INT8_DYNAMIC)))
    assert res.exit_code == 0, [a["error"] for a in res.manifest["artifacts"]]
    m = _assert_manifest_consistent(res.build_dir)
    assert [f["path"] for f in m["reference"]["files"]] == ["model.onnx", "model.onnx.data"]
    for a in m["artifacts"]:
        assert [f["path"] for f in a["files"]] == ["model.onnx", "model.onnx.data"], a["id"]
    # an .onnx source with external data: copied with its data, then verified
    src = res.build_dir / "reference" / "model.onnx"
    res2 = compile_model(CompileOptions(source=str(src), name="fromonnx", out_dir=tmp_path / "c",
                                        targets=(Engine.ONNXRUNTIME,), precisions=(Precision.FP32,)))
    assert res2.exit_code == 0 and res2.manifest["model"]["source_kind"] == "onnx"


def test_onnx_source_cannot_feed_tflite(tiny_factory: Path, tmp_path: Path) -> None:
    res = compile_model(CompileOptions(source=f"{tiny_factory}:build", out_dir=tmp_path / "b",
                                       targets=(Engine.ONNXRUNTIME,), precisions=(Precision.FP32,)))
    src = res.build_dir / "reference" / "model.onnx"
    res2 = compile_model(CompileOptions(source=str(src), name="x", out_dir=tmp_path / "c",
                                        targets=(Engine.ONNXRUNTIME, Engine.TFLITE), precisions=(Precision.FP32,)))
    assert res2.exit_code == 3
    tfl = [a for a in res2.manifest["artifacts"] if a["engine"] == "tflite"][0]
    assert tfl["status"] == "failed" and tfl["error"]


def test_cli_json_and_table(tiny_factory: Path, tmp_path: Path, run_cli) -> None:
    r = run_cli(["compile", f"{tiny_factory}:build", "--out", str(tmp_path / "b"), "--targets", "onnxruntime",
                 "--precisions", "fp32,fp16", "--name", "tinyname"])
    assert r.returncode == 0, r.stderr
    assert "onnxruntime-fp16" in r.stdout and "top1_agreement" in r.stdout and "status: ok" in r.stdout
    assert "exporting reference ONNX" in r.stderr  # progress on stderr
    # third-party chatter (torch.onnx's step lines, absl, oneDNN) lands in the build's log, not the console
    assert "[torch.onnx]" not in r.stderr and "torchvision" not in r.stderr
    assert (tmp_path / "b" / "tinyname" / "compile.log").is_file()
    m = json.loads((tmp_path / "b" / "tinyname" / "manifest.json").read_text())
    assert m["model"]["metadata"]["task"] == "classify"
    assert m["artifacts"][0]["verification"]["fidelity"]["metric"] == "top1_agreement"
    assert m["model"]["name"] == "tinyname" and m["toolchain"]["torch"] and m["toolchain"]["onnxruntime"]
    assert m["model"]["source_sha256"] and m["io"]["inputs"][0]["name"] == "pixels"
    bad = run_cli(["compile", f"{tiny_factory}:build", "--targets", "tensorrt"])
    assert bad.returncode == 2 and "unknown target 'tensorrt'" in bad.stderr


def test_a_relative_out_dir_builds_onnxruntime_artifacts(tmp_path, monkeypatch):
    """`edgeship compile model --out build` (the default is the relative `build`): ORT's
    quantizer runs with the scratch dir as cwd, so relative paths must not reach it. Every
    ORT artifact failed with 'No such file or directory: build/.m.staging-N/reference/...'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from runtime.spec import Engine
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    monkeypatch.chdir(tmp_path)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "mm.onnx")
    np.savez("d.npz", x=rng.standard_normal((16, 8)).astype(np.float32))
    res = compile_model(CompileOptions(source="mm.onnx", out_dir=Path("build"), targets=(Engine.ONNXRUNTIME,),
                                       precisions=(Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC),
                                       calibration="d.npz", validation="d.npz"))
    arts = {a["id"]: a for a in res.manifest["artifacts"]}
    assert {k: a["status"] for k, a in arts.items()} == dict.fromkeys(
        ["onnxruntime-fp32", "onnxruntime-int8-static", "onnxruntime-int8-dynamic"], "ok"), arts
    assert (tmp_path / "build" / "mm" / "manifest.json").is_file()
