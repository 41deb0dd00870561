"""Fixtures for OTA tests: real ONNX models, real bundles, a real TUF repository built by
`edgeship publish`, served on loopback by `edgeship repo serve`'s server, a real store/agent."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from runtime.contracts.bundle import (
    BundleInfo, FileEntry, Precision, Requirements, Source, Tolerances,
)
from runtime.fsutil import sha256_bytes
from runtime.spec import Engine, TensorSpec

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable  # the interpreter running the tests (a worktree has no .venv of its own)

GOLDEN_X = np.array([[[0.5, 1.0, 2.0, 3.0]], [[-1.0, 0.0, 4.0, 5.0]], [[0.1, 0.2, 0.3, 0.4]]], np.float32)


# ------------------------------------------------------------------------ models
def onnx_model(kind: str) -> bytes:
    """Small ONNX models: good (y = 2x + c), nan (Log of a negative), wide (wrong output
    shape), slow (a long Loop), reshape (fails on inputs that are not 4 wide)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    x = h.make_tensor_value_info("x", T.FLOAT, [1, 4])
    y = h.make_tensor_value_info("y", T.FLOAT, [1, 4])
    two = h.make_tensor("two", T.FLOAT, [], [2.0])
    one = h.make_tensor("one", T.FLOAT, [], [1.0])
    inits = [two, one]
    base = [h.make_node("Mul", ["x", "two"], ["x2"])]
    if kind == "good":
        nodes = base + [h.make_node("Add", ["x2", "one"], ["y"])]
    elif kind == "good2":  # the same function, another graph (a "new release" of the model)
        nodes = [h.make_node("Add", ["x", "x"], ["x2"]), h.make_node("Add", ["x2", "one"], ["y"])]
    elif kind == "nan":
        hundred = h.make_tensor("hundred", T.FLOAT, [], [100.0])
        inits.append(hundred)
        nodes = [h.make_node("Sub", ["x", "hundred"], ["neg"]), h.make_node("Log", ["neg"], ["y"])]
    elif kind == "wide":
        y = h.make_tensor_value_info("y", T.FLOAT, [1, 8])
        nodes = base + [h.make_node("Add", ["x2", "one"], ["y4"]), h.make_node("Concat", ["y4", "y4"], ["y"], axis=1)]
    elif kind == "slow":
        nodes, inits = _slow_nodes(h, T, inits)
    elif kind in CRASH_BELOW:
        nodes, inits = _crash_nodes(h, T, inits, CRASH_BELOW[kind])
    elif kind == "reshape":
        x = h.make_tensor_value_info("x", T.FLOAT, [1, "n"])
        shape = h.make_tensor("shape", T.INT64, [2], [1, 4])
        inits.append(shape)
        nodes = [h.make_node("Reshape", ["x", "shape"], ["x4"]), h.make_node("Mul", ["x4", "two"], ["x2"]),
                 h.make_node("Add", ["x2", "one"], ["y"])]
    else:
        raise ValueError(kind)
    g = h.make_graph(nodes, kind, [x], [y], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


# A model that really kills the process during inference (not at load): y = 2x + 1, plus
# 0 * float(INT64_MIN // d) with d = -1 where x < threshold, else 1. ONNX Runtime checks integer
# division by zero but not INT64_MIN / -1, which traps on x86-64 (idiv overflow -> SIGFPE).
# crash_gate: the golden set (it holds -1.0) crashes; crash_trial: the golden set passes,
# any input below -50 crashes.
CRASH_BELOW = {"crash_gate": -0.5, "crash_trial": -50.0}


def _crash_nodes(h, T, inits, threshold: float):
    inits = inits + [h.make_tensor("zero", T.FLOAT, [], [0.0]), h.make_tensor("thr", T.FLOAT, [], [threshold]),
                     h.make_tensor("i1", T.INT64, [], [1]), h.make_tensor("i2", T.INT64, [], [2]),
                     h.make_tensor("imin", T.INT64, [], [int(np.iinfo(np.int64).min)])]
    nodes = [
        h.make_node("Mul", ["x", "two"], ["x2"]), h.make_node("Add", ["x2", "one"], ["y0"]),
        h.make_node("Less", ["x", "thr"], ["lt"]), h.make_node("Cast", ["lt"], ["lti"], to=T.INT64),
        h.make_node("Mul", ["lti", "i2"], ["lt2"]), h.make_node("Sub", ["i1", "lt2"], ["d"]),
        h.make_node("Div", ["imin", "d"], ["q"]), h.make_node("Cast", ["q"], ["qf"], to=T.FLOAT),
        h.make_node("Mul", ["qf", "zero"], ["z"]), h.make_node("Add", ["y0", "z"], ["y"]),
    ]
    return nodes, inits


def _slow_nodes(h, T, inits):
    """y = 2x + 1 + 0 * sum(loop of 400 tanh(v @ W) on 96x96): correct but ~slow."""
    n = 96
    w = h.make_tensor("W", T.FLOAT, [n, n], list(np.full(n * n, 0.01, np.float32)))
    v0 = h.make_tensor("v0", T.FLOAT, [n, n], list(np.full(n * n, 0.5, np.float32)))
    trip = h.make_tensor("trip", T.INT64, [], [400])
    cond = h.make_tensor("cond", T.BOOL, [], [True])
    zero = h.make_tensor("zero", T.FLOAT, [], [0.0])
    body = h.make_graph(
        [h.make_node("MatMul", ["v_in", "W"], ["mm"]), h.make_node("Tanh", ["mm"], ["v_out"]),
         h.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c_in", T.BOOL, []),
         h.make_tensor_value_info("v_in", T.FLOAT, [n, n])],
        [h.make_tensor_value_info("c_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, [n, n])],
    )
    nodes = [
        h.make_node("Mul", ["x", "two"], ["x2"]), h.make_node("Add", ["x2", "one"], ["y0"]),
        h.make_node("Loop", ["trip", "cond", "v0"], ["vf"], body=body),
        h.make_node("ReduceSum", ["vf"], ["s"], keepdims=0), h.make_node("Mul", ["s", "zero"], ["z"]),
        h.make_node("Add", ["y0", "z"], ["y"]),
    ]
    return nodes, inits + [w, v0, trip, cond, zero]


# ------------------------------------------------------------------------ bundles
def _ti(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = size, 0, 0o644, 0, 0
    return ti


def make_bundle(out_dir: Path, *, name: str = "m", release: int = 1, kind: str = "good",
                arch: tuple[str, ...] = ("x86_64", "aarch64", "armv7l"), latency_budget_ms: float = 50.0,
                pad_bytes: int = 0, min_engine_version: str = "1.17") -> Path:
    """A bundle per docs/design.md whose golden outputs are those of the *good* model."""
    model = onnx_model(kind)
    if pad_bytes:  # bigger bundle for the latency figure: an extra file under model/
        extra = np.random.default_rng(release).bytes(pad_bytes)
    golden = io.BytesIO()
    np.savez(golden, **{"in:x": GOLDEN_X, "out:y": GOLDEN_X * 2 + 1})
    golden_b = golden.getvalue()
    members = {"model/model.onnx": model, "golden.npz": golden_b}
    if pad_bytes:
        members["model/weights.bin"] = extra
    files = tuple(FileEntry(p, sha256_bytes(b), len(b)) for p, b in sorted(members.items()))
    spec_x = TensorSpec("x", "float32", (1, "n") if kind == "reshape" else (1, 4))
    info = BundleInfo(
        name=name, version=f"1.0.{release}", release=release, engine=Engine.ONNXRUNTIME,
        precision=Precision.FP32, model_file="model.onnx", inputs=(spec_x,),
        outputs=(TensorSpec("y", "float32", (1, 4)),),
        requirements=Requirements(engine=Engine.ONNXRUNTIME, min_engine_version=min_engine_version,
                                  arch=arch, opset=17),
        latency_budget_ms=latency_budget_ms, tolerances=Tolerances(atol=1e-4, min_cosine=0.999),
        golden_calls=len(GOLDEN_X), input_stats={}, output_stats={}, files=files,
        source=Source(build_manifest_sha256="0" * 64, artifact_id=f"test-{kind}"),
    )
    members["model.json"] = info.to_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for n in sorted(members):
            tf.addfile(_ti(n, len(members[n])), io.BytesIO(members[n]))
    data = buf.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{release}-{kind}-{sha256_bytes(data)[:12]}.tar"
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------ a device + repo
@dataclass
class Env:
    tmp: Path
    keys: Path
    repo: Path
    state: Path
    url: str
    server: object

    def publish(self, bundle: Path, **kw):
        from toolchain.ota.publish import publish

        return publish(bundle=bundle, repo_dir=self.repo, keys_dir=self.keys, **{"init": True, **kw})

    def bundle(self, **kw) -> Path:
        return make_bundle(self.tmp / "bundles", **kw)

    def update_cfg(self, **kw):
        from device_agent.ota.config import UpdateSection

        base = dict(repository_url=self.url, trial_requests=6, trial_duration_s=3.0,
                    trial_probe_interval_s=0.02, trial_min_requests=3, download_timeout_s=5.0)
        base.update(kw)
        return UpdateSection(**base)

    def device(self, **kw):
        """(store, agent, updater) on the device state dir."""
        from device_agent.agent import Agent
        from device_agent.config import AgentConfig
        from device_agent.store import Store
        from device_agent.ota import Updater

        cfg = AgentConfig.for_state_dir(self.state)
        store = Store(self.state)
        agent = Agent(cfg, store=store)
        clock = kw.pop("clock", None)
        extra = {"clock": clock} if clock else {}
        return store, agent, Updater(cfg, store, agent, update_config=self.update_cfg(**kw), **extra)

    def write_config(self, **kw) -> Path:
        """An agent.toml for CLI runs (the [update] section needs device_agent.config.SECTIONS)."""
        lines = ["[agent]", f'state_dir = "{self.state}"']
        p = self.tmp / "agent.toml"
        p.write_text("\n".join(lines) + "\n")
        (self.tmp / "update.json").write_text(json.dumps({"repository_url": self.url, **kw}))
        return p

    def snapshot(self) -> dict:
        """What the attack tests assert unchanged: pointers and the set of stored models."""
        models = sorted(p.name for p in (self.state / "models").iterdir()) if (self.state / "models").exists() else []
        ptr = (self.state / "pointers.json").read_text() if (self.state / "pointers.json").exists() else None
        return {"pointers": ptr, "models": models}


def recording_handler(base=None):
    """A repo request handler that records (path, Range header) of every GET on the server."""
    from toolchain.ota.serve import RepoRequestHandler

    class Recording(base or RepoRequestHandler):
        def do_GET(self):
            self.server.requests.append((self.path, self.headers.get("Range")))
            super().do_GET()

    return Recording


def build_env(tmp_path: Path, *, policies=None, handler=None) -> Env:
    """Keys, a repository holding release 1 of model "m", served on loopback; a device with
    release 1 installed and active, provisioned with root.json."""
    from device_agent.store import Store
    from toolchain.ota.keys import init_keys
    from toolchain.ota.serve import serve_in_thread

    keys = tmp_path / "keys"
    root = init_keys(keys_dir=keys, policies=policies)
    repo = tmp_path / "repo"
    srv, url = serve_in_thread(repo, handler=recording_handler(handler))
    srv.requests = []
    e = Env(tmp=tmp_path, keys=keys, repo=repo, state=tmp_path / "device", url=url, server=srv)
    b1 = e.bundle(release=1)
    e.publish(b1)
    store = Store(e.state)
    ref = store.install_bundle(b1)
    store.activate(ref.sha256)
    (e.state / "trust").mkdir()
    (e.state / "trust" / "root.json").write_bytes(root.read_bytes())
    return e


@pytest.fixture
def env(tmp_path):
    e = build_env(tmp_path)
    yield e
    e.server.shutdown()
    e.server.server_close()
