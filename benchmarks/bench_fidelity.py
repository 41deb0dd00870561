"""Harness fidelity: does `edgeship bench` report the latency the engines' own tools report?

Measured side by side in ONE run, on the same model files, same thread count:
- ONNX Runtime: edgeship's p50 vs a bare ``InferenceSession.run`` loop on the same inputs
  (the build's validation samples, cycled in the same order), both in fresh processes.
  Target: within 3%.
- OpenVINO: edgeship's p50 vs ``benchmark_app -hint latency`` (threads set through
  ``-load_config``, since benchmark_app's UI refuses ``-nthreads`` with a hint). Target: 10%.
- TFLite/LiteRT: edgeship's p50 vs ``litert-benchmark --num_threads``. Target: 10%.

The machine may be shared, so one long block per tool would mostly measure whoever else is
busy at that moment. Instead the two sides of each engine run as ``--rounds`` adjacent pairs
of short blocks (alternating which goes first, each block a fresh process); the verdict uses
the median over rounds of the paired ratio edgeship/reference, which cancels slow changes
in background load. The medians of each side's p50s are printed too.

    .venv/bin/python benchmarks/bench_fidelity.py [--build build/resnet18] [--threads 1] [--seconds 10]

Without --build it compiles ``ref:resnet18`` (fp32 only) into ./build first.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
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
pool = [{n: np.ascontiguousarray(z[n][i:i + 1]) for n in names} for i in range(min(16, len(z[names[0]])))]
i, t0 = 0, time.perf_counter()
while i < warm_iters or time.perf_counter() - t0 < float(warm_s):
    s.run(None, pool[i % len(pool)]); i += 1
lat, t0 = [], time.perf_counter()
while len(lat) < min_iters or time.perf_counter() - t0 < float(min_s):
    a = time.perf_counter_ns(); s.run(None, pool[(i + len(lat)) % len(pool)]); lat.append(time.perf_counter_ns() - a)
print(json.dumps({"p50_s": float(np.percentile(np.array(lat) / 1e9, 50)), "count": len(lat)}))
"""


def ensure_build(build: Path | None) -> Path:
    if build is not None:
        return build
    build = ROOT / "build" / "resnet18"
    if not (build / "manifest.json").exists():
        print("compiling ref:resnet18 (fp32) into ./build ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "toolchain.cli", "compile", "ref:resnet18", "--out", str(ROOT / "build"),
                        "--precisions", "fp32"], cwd=ROOT, check=True)
    return build


def fp32_artifacts(build: Path) -> dict[str, dict]:
    man = json.loads((build / "manifest.json").read_text())
    out = {}
    for a in man["artifacts"]:
        if a["precision"] == "fp32" and a["status"] in ("ok", "gate_failed") and a["engine"] not in out:
            out[a["engine"]] = a
    return out


def edgeship_p50s(build: Path, artifact_ids: list[str], threads: int, length, out: Path) -> dict[str, float]:
    from toolchain.bench import api

    cfg = api.make_config(threads=(threads,), run_length=length, repeats=1, artifacts=artifact_ids)
    res = api.bench(build, config=cfg, out_dir=out, progress=None)
    p = {}
    for c in res["cells"]:
        if c["status"] != "ok":
            raise SystemExit(f"edgeship cell {c['key']} failed: {c['errors']}")
        p[c["engine"]] = (c["stats"]["percentiles_s"]["p50"], c.get("executed_precision"))
    return p


def bare_ort_p50(model: Path, npz: Path, threads: int, length) -> float:
    r = subprocess.run([sys.executable, "-c", BARE_ORT, str(model), str(npz), str(threads), str(length.min_iters),
                        str(length.min_duration_s), str(length.warmup_min_iters), str(length.warmup_min_s)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["p50_s"]


def benchmark_app_p50(model: Path, threads: int, seconds: float, shape: str | None, tmp: Path) -> tuple[float, str]:
    cfg = tmp / "ov_config.json"
    cfg.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}}))
    cmd = [str(VENV_BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "latency",
           "-load_config", str(cfg), "-t", str(max(1, round(seconds)))]
    if shape:
        cmd += ["-shape", shape]
    r = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"Median:\s+([\d.]+)\s+(ms|us)", r.stdout)
    if not m:
        raise SystemExit(f"benchmark_app failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    prec = re.search(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>", r.stdout)
    return float(m.group(1)) / (1e3 if m.group(2) == "ms" else 1e6), (prec.group(1) if prec else "?")


def litert_p50(model: Path, threads: int, runs: int, warmup: int, tmp: Path) -> float:
    out = tmp / "litert.json"
    r = subprocess.run([str(VENV_BIN / "litert-benchmark"), "--model", str(model), "--num_threads", str(threads),
                        "--num_runs", str(runs), "--warmup_runs", str(warmup), "--result_json", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        raise SystemExit(f"litert-benchmark failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return json.loads(out.read_text())["latency"]["median_ms"] / 1e3


def ov_shape(art: dict) -> str | None:
    specs = art.get("io", {}).get("inputs", [])
    if all(all(isinstance(d, int) for d in s["shape"]) for s in specs):
        return None
    return ",".join(f"{s['name']}[{','.join(str(d) if isinstance(d, int) else '1' for d in s['shape'])}]" for s in specs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per block")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()

    from runtime.bench.spec import RunLength

    build = ensure_build(args.build)
    arts = fp32_artifacts(build)
    length = RunLength(warmup_min_iters=10, warmup_min_s=1.0, min_iters=30, min_duration_s=args.seconds,
                       max_duration_s=args.seconds * 6)
    npz = build / "data" / "validation.npz"
    rows: dict[str, dict[str, list]] = {e: {"edgeship": [], "tool": []} for e in arts}
    exec_prec: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for rnd in range(args.rounds):
            edgeship_first = rnd % 2 == 0
            for engine, art in arts.items():
                model = build / art["dir"] / art["model_file"]

                def tool():
                    if engine == "onnxruntime":
                        return bare_ort_p50(model, npz, args.threads, length)
                    if engine == "openvino":
                        p, prec = benchmark_app_p50(model, args.threads, args.seconds, ov_shape(art), tmp)
                        exec_prec["benchmark_app"] = prec
                        return p
                    last = rows[engine]["edgeship"][-1] if rows[engine]["edgeship"] else 0.01
                    runs = max(200, int(args.seconds / last))
                    return litert_p50(model, args.threads, runs, 10, tmp)

                def ours():
                    p, prec = edgeship_p50s(build, [art["id"]], args.threads, length, tmp / f"e{rnd}{engine}")[engine]
                    exec_prec[f"edgeship-{engine}"] = prec
                    return p

                order = (("edgeship", ours), ("tool", tool)) if edgeship_first else (("tool", tool), ("edgeship", ours))
                for side, fn in order:
                    rows[engine][side].append(fn())
                print(f"round {rnd + 1}/{args.rounds} {engine}: edgeship {rows[engine]['edgeship'][-1] * 1e3:.3f} ms, "
                      f"reference {rows[engine]['tool'][-1] * 1e3:.3f} ms", file=sys.stderr, flush=True)

    tools = {"onnxruntime": ("bare InferenceSession.run loop", 0.03),
             "openvino": ("benchmark_app -hint latency", 0.10),
             "tflite": ("litert-benchmark", 0.10)}
    from runtime.bench.fingerprint import host_fingerprint

    fp = host_fingerprint()
    print(f"load average at the end: {fp['load_avg']}", file=sys.stderr)
    print(f"\nHarness fidelity on {fp['cpu_model']} ({fp['logical_cpus']} CPUs, load avg {fp['load_avg']}), "
          f"model {build.name}, batch 1, {args.threads} thread(s), {args.seconds:.0f} s per side x {args.rounds} rounds\n")
    print("| engine | reference tool | reference p50 ms (median of rounds) | edgeship p50 ms (median of rounds) "
          "| paired difference (median) | target | verdict | per-round edgeship / reference ms |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    ok = True
    for engine, r in rows.items():
        name, tol = tools[engine]
        e, t = statistics.median(r["edgeship"]), statistics.median(r["tool"])
        diff = statistics.median(a / b for a, b in zip(r["edgeship"], r["tool"])) - 1
        verdict = "PASS" if abs(diff) <= tol else "FAIL"
        ok &= verdict == "PASS"
        rounds = "; ".join(f"{a * 1e3:.3f}/{b * 1e3:.3f}" for a, b in zip(r["edgeship"], r["tool"]))
        print(f"| {engine} | {name} | {t * 1e3:.3f} | {e * 1e3:.3f} | {diff:+.1%} | {tol:.0%} | {verdict} | {rounds} |")
    print(f"\nexecuted precision: {exec_prec}")
    print("all within target" if ok else "NOT all within target (see the rows marked FAIL)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
