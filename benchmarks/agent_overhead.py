"""Agent overhead, measured side by side in one run (issue 4 figures).

1. In-process: ``Agent.infer`` against a bare ONNX Runtime ``InferenceSession.run`` (and
   edgeship's ``runtime`` Session) on a ~1 ms model; target <= 5% at p50.
2. HTTP: a real ``edgeship-agent run`` process (uvicorn) on localhost, small input, against
   ``Agent.infer`` in process; target <= 1 ms added at p50 (client + server + JSON).

Measurements are interleaved call by call (rotating order) so drift from other load on the
machine hits every variant alike; the in-process overhead is also given as the median of
paired differences (agent call i minus bare call i), which is robust to that drift. Usage: ``python benchmarks/agent_overhead.py [--iters N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------ shared helpers
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


def p50_ms(xs) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, 50))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


# ------------------------------------------------------------------------ the run
def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _interleaved(variants: dict, n: int) -> dict[str, list[float]]:
    """Time every variant once per iteration, rotating the order, so load drift on the
    machine hits all alike; sample i of each variant comes from the same moment."""
    names = list(variants)
    out: dict[str, list[float]] = {k: [] for k in names}
    for i in range(n):
        for k in names[i % len(names):] + names[:i % len(names)]:
            fn = variants[k]
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=300, help="calls per variant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args(argv)

    import httpx
    import onnxruntime as ort

    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from runtime import open_model

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        res = make_bundle(tmp, release=1, dim=args.dim, layers=args.layers)
        small = make_bundle(tmp / "small", release=1, name="small", dim=16, layers=2)
        state = tmp / "state"
        store, ref = active_store(state, res.path)
        model = store.model_path(ref.sha256)
        x = np.random.default_rng(1).standard_normal((1, args.dim)).astype(np.float32)

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        bare = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
        rt = open_model(model, threads=1)
        agent = Agent(AgentConfig.for_state_dir(state, engine_threads=1))
        agent.add_request_observer(lambda sha, ok, dt: None)  # as the updater/MQTT would
        variants = {
            "bare onnxruntime": lambda: bare.run(["y"], {"x": x}),
            "runtime.Session": lambda: rt.run({"x": x}),
            "Agent.infer": lambda: agent.infer({"x": x}),
        }
        for fn in variants.values():
            _timed(fn, 50)  # warm-up
        samples = _interleaved(variants, args.rounds * args.iters)
        base = p50_ms(samples["bare onnxruntime"])
        print(f"In-process overhead, {args.layers}x{args.dim} MLP, batch 1, 1 thread, "
              f"{args.rounds * args.iters} calls per variant, interleaved call by call:")
        for k, v in samples.items():
            p = p50_ms(v)
            line = f"  {k:<18} p50 {p:7.3f} ms  p95 {np.percentile(np.asarray(v) * 1e3, 95):7.3f} ms"
            if not k.startswith("bare"):
                paired = float(np.median(np.asarray(v) - np.asarray(samples["bare onnxruntime"]))) * 1e3
                line += (f"  overhead {100 * (p - base) / base:+.1f}% of p50; paired median "
                         f"{paired * 1e3:+.0f} us = {100 * paired / base:+.1f}% (target <= 5%)")
            print(line)
        agent.close()

        # HTTP: a real agent process on localhost, small input (16 floats)
        st2 = tmp / "state2"
        active_store(st2, small.path)
        port = free_port()
        proc = spawn_agent(write_config(tmp / "agent.toml", st2, port))
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            local = Agent(AgentConfig.for_state_dir(st2, engine_threads=1))
            xs = np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32)
            body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": xs.ravel().tolist()}]}
            raw = json.dumps(body).encode()
            conn = http.client.HTTPConnection("127.0.0.1", port)

            def stdlib_call():
                conn.request("POST", "/v2/models/small/infer", body=raw,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(r.status)

            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                def httpx_call():
                    c.post("/v2/models/small/infer", content=raw,
                           headers={"Content-Type": "application/json"}).raise_for_status()
                http_variants = {"Agent.infer": lambda: local.infer({"x": xs}),
                                 "http.client": stdlib_call, "httpx": httpx_call}
                for fn in http_variants.values():
                    _timed(fn, 50)
                hs = _interleaved(http_variants, args.rounds * args.iters)
            conn.close()
            local.close()
        finally:
            stop(proc)
        a = p50_ms(hs["Agent.infer"])
        print("HTTP API (edgeship-agent run: uvicorn on 127.0.0.1, keep-alive client, 2x16 MLP, 16 floats in/out):")
        print(f"  Agent.infer in process       p50 {a:7.3f} ms")
        for k in ("http.client", "httpx"):
            h = p50_ms(hs[k])
            print(f"  POST /v2/.../infer ({k:<11}) p50 {h:7.3f} ms  adds {h - a:.3f} ms (target <= 1 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
