"""Fixtures for the agent tests: tiny build directories (per docs/design.md) and bundles.

A build dir here is what `edgeship compile` writes, made by hand with onnx.helper so the
agent tests do not depend on torch: manifest.json, data/validation.npz, reference/ and one
artifact folder ``onnxruntime-fp32``.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain.demo_ota import write_ort_fp32_manifest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from agentproc import agent_cmd, subprocess_env, wait_ready  # noqa: E402


def _linear_model(scale: float, *, gather: bool = False, static_batch: int | None = None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch = static_batch if static_batch else "batch"
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0) * scale
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32) * scale
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])]
    if gather:  # an INT64 input; an index out of range makes the engine raise
        inputs.append(helper.make_tensor_value_info("idx", TensorProto.INT64, [batch, 1]))
        nodes.append(helper.make_node("GatherElements", ["y", "idx"], ["picked"], axis=1))
        outputs.append(helper.make_tensor_value_info("picked", TensorProto.FLOAT, [batch, 1]))
    g = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeship-test")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def make_build(root: Path, *, name: str = "tiny", scale: float = 1.0, gather: bool = False,
               samples: int = 16, static_batch: int | None = None) -> Path:
    """Write a build directory per docs/design.md with one verified ORT fp32 artifact."""
    import onnx

    root.mkdir(parents=True, exist_ok=True)
    model = _linear_model(scale, gather=gather, static_batch=static_batch)
    (root / "reference").mkdir(exist_ok=True)
    onnx.save(model, root / "reference" / "model.onnx")
    art = root / "onnxruntime-fp32"
    art.mkdir(exist_ok=True)
    onnx.save(model, art / "model.onnx")
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((samples, 4)).astype(np.float32)}
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": [static_batch or "batch", 4]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": [static_batch or "batch", 3]}]}
    if gather:
        data["idx"] = np.ones((samples, 1), dtype=np.int64)
        io["inputs"].append({"name": "idx", "dtype": "int64", "shape": [static_batch or "batch", 1]})
        io["outputs"].append({"name": "picked", "dtype": "float32", "shape": [static_batch or "batch", 1]})
    (root / "data").mkdir(exist_ok=True)
    np.savez(root / "data" / "validation.npz", **data)
    write_ort_fp32_manifest(root, name=name, source="tests", io=io, samples=samples)
    return root


def make_bundle(tmp: Path, *, release: int, scale: float = 1.0, name: str = "tiny", gather: bool = False,
                version: str | None = None, static_batch: int | None = None):
    from toolchain.package import package_build

    build = make_build(tmp / f"build-{name}-{release}", name=name, scale=scale, gather=gather,
                       static_batch=static_batch)
    return package_build(build, artifact_id="onnxruntime-fp32", version=version or f"1.{release}.0",
                         release=release, out_dir=tmp / "bundles", golden_samples=4)


def write_bundle(tmp: Path, model, *, inputs: list[dict], outputs: list[dict], name: str, release: int = 1):
    """A bundle of ONNX ``model`` written by hand, with no golden set (golden_calls 0): for models
    ``edgeship package`` cannot take statistics of (strings) or that tests only serve."""
    from runtime.contracts.bundle import BundleInfo
    from runtime.fsutil import sha256_bytes
    from toolchain.package import _npz_bytes, _write_tar

    data, golden = model.SerializeToString(), _npz_bytes({})
    info = BundleInfo.from_json({
        "schema_version": 1, "name": name, "version": f"1.{release}.0", "release": release,
        "engine": "onnxruntime", "precision": "fp32", "model_file": "model.onnx",
        "io": {"inputs": inputs, "outputs": outputs},
        "requirements": {"engine": "onnxruntime", "min_engine_version": "1.17.0",
                         "arch": ["x86_64", "aarch64"], "opset": 17},
        "latency_budget_ms": None, "tolerances": {"atol": 1e-3, "min_cosine": 0.999}, "golden_calls": 0,
        "input_stats": {}, "output_stats": {},
        "files": [{"path": "golden.npz", "sha256": sha256_bytes(golden), "bytes": len(golden)},
                  {"path": "model/model.onnx", "sha256": sha256_bytes(data), "bytes": len(data)}],
        "source": {"build_manifest_sha256": "0" * 64, "artifact_id": "onnxruntime-fp32"}})
    path, sha = _write_tar(tmp / "bundles", info, {"model.json": info.to_bytes(), "golden.npz": golden,
                                                   "model/model.onnx": data})
    return type("Bundle", (), {"path": path, "sha256": sha, "info": info})


def _onnx(nodes, name, inputs, outputs, inits=(), ml=False):
    import onnx
    from onnx import helper

    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)), opset_imports=opsets)
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def make_text_bundle(tmp: Path, *, name: str = "words", release: int = 1):
    """A string (BYTES) input ``s`` [batch] -> ``ids`` int64 (a LabelEncoder lookup: cat 1,
    dog 2, é 3, else 0) and ``same`` (the strings back)."""
    from onnx import TensorProto, helper

    m = _onnx([helper.make_node("LabelEncoder", ["s"], ["ids"], domain="ai.onnx.ml",
                                keys_strings=["cat", "dog", "é"], values_int64s=[1, 2, 3], default_int64=0),
               helper.make_node("Identity", ["s"], ["same"])], name,
              [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
               helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])], ml=True)
    return write_bundle(tmp, m, name=name, release=release,
                        inputs=[{"name": "s", "dtype": "object", "shape": ["batch"]}],
                        outputs=[{"name": "ids", "dtype": "int64", "shape": ["batch"]},
                                 {"name": "same", "dtype": "object", "shape": ["batch"]}])


def make_scalar_bundle(tmp: Path, *, name: str = "scaled", release: int = 1):
    """``x`` float32 [batch, 4] and a rank-0 int64 ``k`` (like Silero VAD's ``sr``) -> ``y = x * k``."""
    from onnx import TensorProto, helper

    m = _onnx([helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "kf"], ["y"])],
              name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                     helper.make_tensor_value_info("k", TensorProto.INT64, [])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    return write_bundle(tmp, m, name=name, release=release,
                        inputs=[{"name": "x", "dtype": "float32", "shape": ["batch", 4]},
                                {"name": "k", "dtype": "int64", "shape": []}],
                        outputs=[{"name": "y", "dtype": "float32", "shape": ["batch", 4]}])


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """Two releases of "tiny" (different weights) and a "picker" bundle with an INT64 input."""
    tmp = tmp_path_factory.mktemp("bundles")
    return {
        "v1": make_bundle(tmp, release=1, scale=1.0),
        "v2": make_bundle(tmp, release=2, scale=2.0),
        "picker": make_bundle(tmp, release=1, name="picker", gather=True),
        "words": make_text_bundle(tmp),
        "scaled": make_scalar_bundle(tmp),
    }


@pytest.fixture
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def helpers():
    class H:
        make_bundle = staticmethod(make_bundle)
        make_build = staticmethod(make_build)
        agent_cmd = staticmethod(agent_cmd)
        env = staticmethod(subprocess_env)
        wait_ready = staticmethod(wait_ready)
    return H
