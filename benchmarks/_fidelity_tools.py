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

#: One process, same settings: edgeship's Session.run (wall, as the cell times it) against OpenVINO's
#: own latency of a request of the same model compiled alike (what benchmark_app reports), in
#: interleaved rounds, so the machine's load hits both alike.
OV_INPROCESS = r"""
import json, sys, time, numpy as np, openvino as ov, runtime
model, npz, threads, hint, rounds, calls = sys.argv[1:7]
threads, rounds, calls, hint = int(threads), int(rounds), int(calls), (hint or None)
sess = runtime.open_model(model, engine="openvino", threads=threads, precision_hint=hint)
names = [s.name for s in sess.inputs]
z = np.load(npz)
pool = [{k: np.ascontiguousarray(z[k][i:i + 1]) for k in names} for i in range(min(16, len(z[names[0]])))]
cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}
if hint:
    cfg["INFERENCE_PRECISION_HINT"] = hint
req = ov.Core().compile_model(model, "CPU", cfg).create_infer_request()
for k in names:
    req.set_tensor(k, ov.Tensor(pool[0][k], shared_memory=True))
for i in range(10):
    sess.run(pool[i % len(pool)]); req.infer()
ours, theirs, n = [], [], 0
for r in range(rounds):
    a, b = [], []
    for side in ((0, 1) if r % 2 == 0 else (1, 0)):
        for _ in range(calls):
            if side == 0:
                t = time.perf_counter_ns(); sess.run(pool[n % len(pool)]); a.append(time.perf_counter_ns() - t); n += 1
            else:
                req.infer(); b.append(req.latency * 1e6)
    ours.append(float(np.median(a)) / 1e9); theirs.append(float(np.median(b)) / 1e9)
print(json.dumps({"edgeship_s": ours, "tool_s": theirs, "executed": sess.executed_precision}))
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


def sample_files(build: Path, shapes: dict, tmp: Path) -> dict[str, Path]:
    """The first validation sample of each input as a batch-1 .npy (benchmark_app ``-i``), so both
    sides run on the same real data."""
    out = {}
    with np.load(build / "data" / "validation.npz") as z:
        for name in shapes:
            p = tmp / f"sample-{build.name}-{name}.npy"
            np.save(p, np.ascontiguousarray(z[name][:1]))
            out[name] = p
    return out


#: numpy dtype name -> OpenVINO element type name, for benchmark_app ``-iop``
_OV_TYPES = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "int8": "i8", "uint8": "u8",
             "bool": "boolean"}


def io_types(artifact: dict) -> dict[str, str]:
    """Every input and output at the model's own element type: benchmark_app otherwise feeds
    image-like inputs as u8 and adds a conversion that edgeship's run does not have."""
    io = artifact.get("io", {})
    return {s["name"]: _OV_TYPES[s["dtype"]] for s in io.get("inputs", []) + io.get("outputs", [])
            if s.get("dtype") in _OV_TYPES}


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
                                 tmp, f32=pin_f32, inputs=sample_files(row["build"], shapes, tmp),
                                 io_types=io_types(row["artifact"]))
    runs = max(200, int(length.min_duration_s / (est_s or 0.01)))
    return litert_p50(model, threads, runs, length.warmup_min_iters, tmp), row["artifact"]["precision"]


def ov_inprocess(row: dict, threads: int, *, rounds: int, calls: int) -> dict:
    """Per-round medians of Session.run and of OpenVINO's own request latency, one process."""
    a = row["artifact"]
    hint = "f32" if row["mode"] == "deploy" and a["precision"] in ("fp32", "fp16") else ""
    r = subprocess.run([sys.executable, "-c", OV_INPROCESS, str(model_path(row)),
                        str(row["build"] / "data" / "validation.npz"), str(threads), hint, str(rounds), str(calls)],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"in-process OpenVINO comparison failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bare_ort_p50(model: Path, npz: Path, threads: int, length) -> float:
    r = subprocess.run([sys.executable, "-c", BARE_ORT, str(model), str(npz), str(threads), str(length.min_iters),
                        str(length.min_duration_s), str(length.warmup_min_iters), str(length.warmup_min_s)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["p50_s"]


def benchmark_app_p50(model: Path, threads: int, seconds: float, shapes: dict | None, tmp: Path, *,
                      f32: bool, inputs: dict[str, Path] | None = None,
                      io_types: dict[str, str] | None = None) -> tuple[float, str]:
    """``benchmark_app -hint latency`` (sync API, one request) at ``threads``, f32 when asked,
    on ``inputs`` (one .npy per input) when given, every input/output at ``io_types``.

    A dynamic model stays dynamic: ``-data_shape`` gives the shapes edgeship fed, and
    ``-inference_only true`` keeps input filling out of the loop as edgeship does."""
    props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}
    if f32:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    cfg = tmp / "ov_config.json"
    cfg.write_text(json.dumps({"CPU": props}))
    cmd = [str(VENV_BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "latency",
           "-load_config", str(cfg), "-t", str(max(1, round(seconds)))]
    if inputs:
        cmd += ["-i", ",".join(f"{k}:{v}" for k, v in inputs.items())]
    if io_types:
        cmd += ["-iop", ",".join(f"{k}:{v}" for k, v in io_types.items())]
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
