"""The two sides bench_fidelity.py compares: edgeship's cell, and each engine's own tool run at
the same settings (threads, shapes, inference precision). Each call is one fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

BARE_ORT = r"""
import json, sys, time, numpy as np, onnxruntime as ort
model, npz, threads, min_iters, min_s, warm_iters, warm_s = sys.argv[1:8]
threads, min_iters, warm_iters = int(threads), int(min_iters), int(warm_iters)
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
s = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
z = np.load(npz)
n = min(16, min(len(z[k]) for k in names))
pool = [{k: np.ascontiguousarray(z[k][i:i + 1]) for k in names} for i in range(n)]
i, t0 = 0, time.perf_counter()
while i < warm_iters or time.perf_counter() - t0 < float(warm_s):
    s.run(None, pool[i % len(pool)]); i += 1
lat, t0 = [], time.perf_counter()
while len(lat) < min_iters or time.perf_counter() - t0 < float(min_s):
    a = time.perf_counter_ns(); s.run(None, pool[(i + len(lat)) % len(pool)]); lat.append(time.perf_counter_ns() - a)
print(json.dumps({"p50_s": float(np.percentile(np.array(lat) / 1e9, 50)), "count": len(lat)}))
"""

#: OpenVINO element type names benchmark_app prints -> ours
_OV_PRECISION = {"float32": "fp32", "f32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "f16": "fp16"}


def compile_reference(tmp: Path) -> Path:
    print("compiling ref:resnet18 (fp32) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "toolchain.cli", "compile", "ref:resnet18", "--out", str(tmp / "build"),
                    "--precisions", "fp32"], cwd=ROOT, check=True)
    return tmp / "build" / "resnet18"


def model_path(row: dict) -> Path:
    a = row["artifact"]
    return row["build"] / a.get("dir", a["id"]) / a["model_file"]


def feed_shapes(build: Path, artifact: dict) -> dict[str, list[int]]:
    """The batch-1 shape of each input edgeship feeds (from the build's validation samples)."""
    npz = build / "data" / "validation.npz"
    names = [s["name"] for s in artifact.get("io", {}).get("inputs", [])]
    with np.load(npz) as z:
        return {n: [1] + list(z[n].shape[1:]) for n in names if n in z.files}


def _dynamic(artifact: dict) -> bool:
    return any(not isinstance(d, int) for s in artifact.get("io", {}).get("inputs", []) for d in s["shape"])


def edgeship_p50(row: dict, threads: int, length, out: Path) -> tuple[float, str | None]:
    from toolchain.bench import api

    cfg = api.make_config(threads=(threads,), run_length=length, repeats=1, artifacts=[row["artifact"]["id"]],
                          ov_precision="auto" if row["mode"] == "bf16" else "deploy")
    res = api.bench(row["build"], config=cfg, out_dir=out, progress=None)
    (c,) = res["cells"]
    if c["status"] != "ok":
        raise SystemExit(f"edgeship cell {c['key']} failed: {c['errors']}")
    return c["stats"]["percentiles_s"]["p50"], c.get("executed_precision")


def reference_p50(row: dict, threads: int, length, shapes: dict, tmp: Path, *, est_s: float | None):
    """(p50 seconds, executed precision) from the engine's own tool."""
    model = model_path(row)
    if row["engine"] == "onnxruntime":
        return bare_ort_p50(model, row["build"] / "data" / "validation.npz", threads, length), row["artifact"]["precision"]
    if row["engine"] == "openvino":
        pin_f32 = row["mode"] == "deploy" and row["artifact"]["precision"] in ("fp32", "fp16")
        return benchmark_app_p50(model, threads, length.min_duration_s, shapes if _dynamic(row["artifact"]) else None,
                                 tmp, f32=pin_f32)
    runs = max(200, int(length.min_duration_s / (est_s or 0.01)))
    return litert_p50(model, threads, runs, length.warmup_min_iters, tmp), row["artifact"]["precision"]


def bare_ort_p50(model: Path, npz: Path, threads: int, length) -> float:
    r = subprocess.run([sys.executable, "-c", BARE_ORT, str(model), str(npz), str(threads), str(length.min_iters),
                        str(length.min_duration_s), str(length.warmup_min_iters), str(length.warmup_min_s)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["p50_s"]


def benchmark_app_p50(model: Path, threads: int, seconds: float, shapes: dict | None, tmp: Path, *,
                      f32: bool) -> tuple[float, str]:
    """``benchmark_app -hint latency`` (sync API, one request) at ``threads``, f32 when asked.

    A dynamic model stays dynamic: ``-data_shape`` gives the shapes edgeship fed, and
    ``-inference_only true`` keeps input filling out of the loop as edgeship does."""
    props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}
    if f32:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    cfg = tmp / "ov_config.json"
    cfg.write_text(json.dumps({"CPU": props}))
    cmd = [str(VENV_BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "latency",
           "-load_config", str(cfg), "-t", str(max(1, round(seconds)))]
    if shapes:
        cmd += ["-data_shape", ",".join(f"{k}[{','.join(map(str, v))}]" for k, v in shapes.items()),
                "-inference_only", "true"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"Median:\s+([\d.]+)\s+(ms|us)", r.stdout)
    if not m:
        raise SystemExit(f"benchmark_app failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    prec = re.search(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>", r.stdout)
    name = prec.group(1) if prec else "?"
    return float(m.group(1)) / (1e3 if m.group(2) == "ms" else 1e6), _OV_PRECISION.get(name, name)


def litert_p50(model: Path, threads: int, runs: int, warmup: int, tmp: Path) -> float:
    out = tmp / "litert.json"
    r = subprocess.run([str(VENV_BIN / "litert-benchmark"), "--model", str(model), "--num_threads", str(threads),
                        "--num_runs", str(runs), "--warmup_runs", str(warmup), "--result_json", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        raise SystemExit(f"litert-benchmark failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return json.loads(out.read_text())["latency"]["median_ms"] / 1e3
