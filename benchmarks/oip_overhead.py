"""What each wire format adds per request over the bare in-process call, side by side in one run.

A real ``edgeship-agent run`` (HTTP + gRPC on 127.0.0.1) serves each of two ONNX Runtime models:

- **image**: a 224x224x3 float input (602 KB per request), global mean -> 1000 logits;
- **small**: a 16-float input and output (a 16x16 MLP layer).

Per model, four variants are timed call by call in rotating order (so machine drift hits all
alike): ``Agent.infer`` in this process (the bare call), tritonclient HTTP with JSON tensors
(``binary_data=False`` on inputs and outputs), tritonclient HTTP with its defaults (binary
tensor data), and tritonclient gRPC (raw contents). "Added" is the median over calls of
(variant call i - bare call i), per round; the figure is the median of the rounds with their
range.

Target (``TARGETS``): on the image input the binary path adds at most a third of what JSON
adds (``binary added / JSON added <= 0.33``), judged over the rounds by the shared rules
(``_verdict``: spread, load during the run). Exit 1 on FAIL, 3 when inconclusive, else 0. Usage: ``python benchmarks/oip_overhead.py [--iters N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _agent_rig import active_store, free_port, make_bundle, spawn_agent, wait_ready  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

RATIO_LIMIT = 0.33
TARGETS = {"ratio": Target("image: HTTP binary added / HTTP JSON added", "<=", RATIO_LIMIT, "x", fmt=".3f")}


def image_bundle(tmp: Path):
    """A bundle of x[batch,224,224,3] -> ReduceMean over H, W -> MatMul 3x1000 -> y[batch,1000]."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from runtime.fsutil import file_entry, sha256_file
    from toolchain.package import package_build

    root = tmp / "build-image"
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 1000)).astype(np.float32), "W")
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "axes")
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0), helper.make_node("MatMul", ["m", "W"], ["y"])],
        "image", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1000])], [w, axes])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    art = root / "onnxruntime-fp32"
    art.mkdir(parents=True)
    (root / "data").mkdir()
    onnx.save(model, art / "model.onnx")
    np.savez(root / "data" / "validation.npz", x=rng.standard_normal((2, 224, 224, 3)).astype(np.float32))
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 224, 224, 3]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 1000]}]}
    (root / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "model": {"name": "image", "opset": 18}, "io": io,
        "validation": {"file": "data/validation.npz", "sha256": sha256_file(root / "data" / "validation.npz")},
        "artifacts": [{"id": "onnxruntime-fp32", "engine": "onnxruntime", "precision": "fp32", "status": "ok",
                       "dir": "onnxruntime-fp32", "model_file": "model.onnx",
                       "files": [file_entry(art, art / "model.onnx")], "io": io,
                       "engine_version": onnxruntime.__version__,
                       "verification": {"passed": True, "tolerances": {"atol": 1e-4, "min_cosine": 0.9999}}}]}))
    return package_build(root, artifact_id="onnxruntime-fp32", version="1.1.0", release=1,
                         out_dir=tmp / "bundles", golden_samples=1)


def start(tmp: Path, bundle: Path, name: str):
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig, AgentSection, LogLevel, ServingSection, dumps

    state = tmp / f"state-{name}"
    active_store(state, bundle)
    port, gport = free_port(), free_port()
    cfg = AgentConfig(agent=AgentSection(state_dir=str(state), log_level=LogLevel.WARNING),
                      serving=ServingSection(port=port, grpc_port=gport, engine_threads=1, max_body_bytes=64 << 20))
    (tmp / f"{name}.toml").write_text(dumps(cfg))
    proc = spawn_agent(tmp / f"{name}.toml")
    wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    active_store(tmp / f"bare-{name}", bundle)
    bare = Agent(dataclasses.replace(cfg, agent=AgentSection(state_dir=str(tmp / f"bare-{name}"))))
    return proc, port, gport, bare


def variants(name: str, x: np.ndarray, port: int, gport: int, bare):
    import tritonclient.grpc as tg
    import tritonclient.http as th

    hc, gc = th.InferenceServerClient(f"127.0.0.1:{port}"), tg.InferenceServerClient(f"127.0.0.1:{gport}")

    def http(binary: bool):
        def call():
            i = th.InferInput("x", list(x.shape), "FP32")
            i.set_data_from_numpy(x, binary_data=binary)
            return hc.infer(name, [i], outputs=[th.InferRequestedOutput("y", binary_data=binary)]).as_numpy("y")
        return call

    def grpc():
        i = tg.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        return gc.infer(name, [i]).as_numpy("y")

    want = bare.infer({"x": x})["y"]
    calls = {"bare": lambda: bare.infer({"x": x})["y"], "HTTP JSON": http(False), "HTTP binary": http(True),
             "gRPC": grpc}
    for label, fn in calls.items():  # warm up, and every path gives the same answer
        for _ in range(5):
            got = fn()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=label)
    return calls, (hc, gc)


def measure(calls: dict, iters: int) -> dict[str, np.ndarray]:
    """Per-call latencies (s), interleaved call by call in rotating order."""
    names = list(calls)
    out = {n: np.empty(iters) for n in names}
    for i in range(iters):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            calls[n]()
            out[n][i] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=150, help="calls per variant per round (default 150)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = ap.parse_args(argv)
    procs, clients = [], []
    rows: dict[tuple[str, str], list] = {}
    mon = LoadMonitor().__enter__()
    try:
        with tempfile.TemporaryDirectory(prefix="oip-bench-") as tmpd:
            tmp = Path(tmpd)
            small = make_bundle(tmp, release=1, dim=16, layers=1, name="small")
            cases = {"image": (image_bundle(tmp).path, np.random.default_rng(1).standard_normal(
                         (1, 224, 224, 3)).astype(np.float32)),
                     "small": (small.path, np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32))}
            for model, (bundle, x) in cases.items():
                proc, port, gport, bare = start(tmp, bundle, model)
                procs.append(proc)
                calls, cl = variants(model, x, port, gport, bare)
                clients += cl
                for _ in range(args.rounds):
                    lat = measure(calls, args.iters if model == "small" else max(20, args.iters // 3))
                    for n in calls:
                        added = lat[n] - lat["bare"]
                        rows.setdefault((model, n), []).append((float(np.median(lat[n])), float(np.median(added))))
                bare.close()
    finally:
        for c in clients:
            c.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        mon.__exit__(None, None, None)
    return report(rows, args, mon.load())


def verdicts(rows: dict, *, load: Load | None) -> Report:
    """``rows[(model, path)]`` holds per-round ``(p50 s, added s)`` (pure; tests feed synthetic numbers)."""
    rep = Report()
    ratios = [b[1] / j[1] for b, j in zip(rows.get(("image", "HTTP binary"), []), rows.get(("image", "HTTP JSON"), []))]
    rep.judge(TARGETS["ratio"], ratios, load=load)
    return rep


def report(rows: dict, args, load: Load | None) -> int:
    print(f"Open Inference Protocol overhead over the bare in-process call (Agent.infer), tritonclient 127.0.0.1, "
          f"{args.rounds} rounds (median [min..max] of per-round medians)")
    print(f"  {'model':6} {'path':12} {'p50 per call':>26}   {'added over bare':>26}")
    for (model, n), vals in rows.items():
        p50 = np.array([v[0] for v in vals]) * 1e3
        add = np.array([v[1] for v in vals]) * 1e3
        extra = "" if n == "bare" else f"{np.median(add):9.3f} ms [{add.min():.3f}..{add.max():.3f}]"
        print(f"  {model:6} {n:12} {np.median(p50):9.3f} ms [{p50.min():.3f}..{p50.max():.3f}]   {extra}")
    rep = verdicts(rows, load=load)
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
