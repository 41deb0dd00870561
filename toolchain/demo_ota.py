"""`make demo-ota`: the whole OTA story on one machine, with real processes.

A mosquitto broker, a TUF repository served over HTTP (`edgeship repo serve`), an agent
installed under a prefix and running with MQTT (`edgeship-agent run`), then: publish release
1 and push it, publish release 2 and push it, publish a deliberately bad release 3 (a model
whose outputs are not deterministic, so its golden set fails the gate) that the device
refuses while release 2 keeps serving, and a manual rollback over MQTT. The fleet status
table is printed after each step.

The tiny models are written with onnx.helper (no torch export needed), compiled into a
build directory per docs/design.md and packaged with `edgeship package`'s code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.fsutil import file_entry, sha256_file


def _tiny_onnx(scale: float):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0) * scale
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32) * scale
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeship-demo")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def make_tiny_build(root: Path, *, name: str = "tiny", scale: float = 1.0, samples: int = 16) -> Path:
    """A build directory (docs/design.md) with one ONNX Runtime fp32 artifact of a 4->3 linear model."""
    import onnx
    import onnxruntime

    root.mkdir(parents=True, exist_ok=True)
    model = _tiny_onnx(scale)
    for sub in ("reference", "onnxruntime-fp32", "data"):
        (root / sub).mkdir(exist_ok=True)
    onnx.save(model, root / "reference" / "model.onnx")
    art = root / "onnxruntime-fp32"
    onnx.save(model, art / "model.onnx")
    data = {"x": np.random.default_rng(0).standard_normal((samples, 4)).astype(np.float32)}
    np.savez(root / "data" / "validation.npz", **data)
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]}
    manifest = {
        "schema_version": 1,
        "model": {"name": name, "source": "toolchain.demo_ota", "source_kind": "onnx",
                  "source_sha256": sha256_file(root / "reference" / "model.onnx"), "opset": 17},
        "io": io, "calibration": None,
        "validation": {"file": "data/validation.npz", "sha256": sha256_file(root / "data" / "validation.npz"),
                       "samples": samples, "labels": False},
        "toolchain": {"edgeship": "0.1.0"}, "created_utc": "2026-11-26T17:00:00Z", "status": "ok",
        "artifacts": [{
            "id": "onnxruntime-fp32", "engine": "onnxruntime", "precision": "fp32", "status": "ok",
            "error": None, "dir": "onnxruntime-fp32", "model_file": "model.onnx",
            "files": [file_entry(art, art / "model.onnx")], "size_bytes": (art / "model.onnx").stat().st_size,
            "io": io, "engine_version": onnxruntime.__version__, "executed_precision": "fp32", "recipe": {},
            "verification": {"samples": samples, "max_abs_error": 0.0, "mean_abs_error": 0.0,
                             "cosine_min": 1.0, "cosine_mean": 1.0,
                             "tolerances": {"atol": 1e-4, "min_cosine": 0.9999}, "passed": True, "failures": []},
        }],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def make_tiny_bundle(work: Path, *, release: int, scale: float = 1.0, name: str = "tiny"):
    """Package a tiny build as bundle ``release``; returns toolchain.package.PackageResult."""
    from toolchain.package import package_build

    build = make_tiny_build(work / f"build-{name}-{release}", name=name, scale=scale)
    return package_build(build, artifact_id="onnxruntime-fp32", version=f"1.{release}.0", release=release,
                         out_dir=work / "bundles", golden_samples=4)


def make_bad_bundle(work: Path, *, release: int, name: str = "tiny") -> Path:
    """A validly formed and signable bundle whose model does not reproduce its golden set.

    It imitates a botched build: the golden outputs come from one model, the shipped model
    file is another (weights negated), and model.json lists the shipped file's real hash, so
    only the device's gate (golden set vs tolerances) can catch it.
    """
    import io
    import tarfile

    import onnx

    from runtime.bundle import BundleInfo
    from runtime.fsutil import sha256_bytes
    from toolchain.package import _write_tar

    good = make_tiny_bundle(work / "bad-src", release=release, scale=3.0, name=name)
    with tarfile.open(good.path, "r:") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    buf = io.BytesIO()
    onnx.save(_tiny_onnx(-3.0), buf)
    wrong = buf.getvalue()
    model_member = f"model/{good.info.model_file}"
    members[model_member] = wrong
    info = json.loads(members["model.json"])
    for f in info["files"]:
        if f["path"] == model_member:
            f["sha256"], f["bytes"] = sha256_bytes(wrong), len(wrong)
    bad = BundleInfo.from_json(info, where="demo bad bundle")
    members["model.json"] = bad.to_bytes()
    path, _ = _write_tar(work / "bundles", bad, members)
    return path
