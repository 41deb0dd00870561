"""What the agent benchmarks share: a verified build of an MLP, bundles of it, a device store
with them installed, and a real ``edgeship-agent run`` process on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_dir(root: Path, *, name: str = "mlp", dim: int = 1024, layers: int = 4, scale: float = 1.0,
              batch: int | str = "batch") -> Path:
    """A build directory (docs/design.md contract) holding one MLP as a verified ORT fp32 artifact."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from runtime.fsutil import file_entry, sha256_file

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((dim, dim)) / np.sqrt(dim) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        if i == layers - 1:
            nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
        else:
            nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [out])]
        prev = out
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dim])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    art = root / "onnxruntime-fp32"
    art.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    onnx.save(model, art / "model.onnx")
    np.savez(root / "data" / "validation.npz", x=rng.standard_normal((8, dim)).astype(np.float32))
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": [batch, dim]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": [batch, dim]}]}
    manifest = {
        "schema_version": 1, "model": {"name": name, "opset": 17}, "io": io,
        "validation": {"file": "data/validation.npz", "sha256": sha256_file(root / "data" / "validation.npz")},
        "artifacts": [{"id": "onnxruntime-fp32", "engine": "onnxruntime", "precision": "fp32", "status": "ok",
                       "dir": "onnxruntime-fp32", "model_file": "model.onnx",
                       "files": [file_entry(art, art / "model.onnx")], "io": io,
                       "engine_version": onnxruntime.__version__,
                       "verification": {"passed": True, "tolerances": {"atol": 1e-4, "min_cosine": 0.9999}}}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_bundle(tmp: Path, *, release: int, **kw):
    from toolchain.package import package_build

    b = build_dir(tmp / f"build-{release}", **kw)
    return package_build(b, artifact_id="onnxruntime-fp32", version=f"1.{release}.0", release=release,
                         out_dir=tmp / "bundles", golden_samples=2)


def active_store(state: Path, *bundles: Path):
    """A device store at ``state`` with ``bundles`` installed and activated in turn (the last
    one serving, the one before it the rollback target); returns the store and the last ref."""
    from device_agent.store import Store

    store = Store(state)
    for path in bundles:
        ref = store.install_bundle(path)
        store.activate(ref.sha256)
    return store, ref


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, state_dir: Path, port: int, threads: int = 1) -> Path:
    from device_agent.config import AgentConfig, AgentSection, ServingSection, dumps
    from device_agent.config import LogLevel

    cfg = AgentConfig(agent=AgentSection(state_dir=str(state_dir), log_level=LogLevel.WARNING),
                      serving=ServingSection(port=port, engine_threads=threads))
    path.write_text(dumps(cfg))
    return path


def spawn_agent(config: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "device_agent.cli", "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> float:
    """Seconds until ``url`` answers 200 (polling every 5 ms)."""
    import urllib.error
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.005)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
