"""Headline table: fp32 vs int8 on each engine for the reference models, measured in one run.

ResNet-18-style and MobileNetV2-style (224x224, batch 1, single stream), 1 and 2 threads,
every artifact of each build (ONNX Runtime fp32/int8-static, OpenVINO fp32/int8 with the
engine's own precision choice AND forced f32, TFLite fp32/int8), each cell in a fresh
process. Prints the table, the int8 notes, and whether ONNX Runtime int8 is >= 2x faster
than fp32 for the ResNet-18-style model on this CPU.

    .venv/bin/python benchmarks/bench_headline.py [--builds build] [--preset quick] [--compile]

Builds are produced by ``edgeship compile ref:resnet18`` / ``ref:mobilenetv2``; with
``--compile`` (or when missing) this script runs those first (random calibration: the
reference models are seeded, not trained, so only the latency figures are meaningful).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("resnet18", "mobilenetv2")


def ensure_build(root: Path, name: str, force: bool) -> Path:
    build = root / name
    if force or not (build / "manifest.json").exists():
        print(f"compiling ref:{name} into {root} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "toolchain.cli", "compile", f"ref:{name}", "--out", str(root),
                        "--precisions", "fp32,int8-static,int8", "--random-calibration"], cwd=ROOT, check=True)
    return build


def headline_rows(res: dict) -> list[str]:
    from toolchain.bench.report_md import fmt_ms

    sp = res["analysis"]["speedups"]
    rows = []
    cells = [c for c in res["cells"] if c["scenario"] == "single_stream"]
    cells.sort(key=lambda c: (c["engine"], c.get("precision_hint") or "", c["threads"], c["precision"] != "fp32"))
    for c in cells:
        name = res["source"]["model"].get("name")
        if c["status"] != "ok":
            rows.append(f"| {name} | {c['engine']} | {c['precision']} | | {c['threads']} | FAILED: "
                        f"{c['errors'][0]['message'][:80]} | | | |")
            continue
        pc = c["stats"]["percentiles_s"]
        s = sp.get(c["key"], {}).get("speedup")
        hint = f" (hint {c['precision_hint']})" if c.get("precision_hint") else ""
        rows.append(f"| {name} | {c['engine']}{hint} | {c['precision']} | {c['executed_precision']} | {c['threads']} | "
                    f"{fmt_ms(pc['p50'])} | {fmt_ms(pc['p90'])} | {c['stats']['count']} | "
                    f"{'%.2fx' % s if s else '-'} |")
    return rows


def ort_int8_speedups(res: dict) -> dict[int, float]:
    sp = res["analysis"]["speedups"]
    return {c["threads"]: sp[c["key"]]["speedup"] for c in res["cells"]
            if c["engine"] == "onnxruntime" and c["precision"] == "int8-static" and c["scenario"] == "single_stream"
            and c["key"] in sp}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builds", type=Path, default=ROOT / "build", help="root holding <model>/manifest.json")
    ap.add_argument("--preset", default="quick", choices=["quick", "standard", "long"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--compile", action="store_true", help="recompile the reference builds first")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()

    from toolchain.bench import api

    threads = tuple(int(t) for t in args.threads.split(","))
    results = {}
    for name in args.models.split(","):
        build = ensure_build(args.builds, name, args.compile)
        cfg = api.make_config(preset=args.preset, threads=threads, batches=(1,), ov_precision="both", seed=1)
        res = api.bench(build, config=cfg, out_dir=build / "bench", progress=sys.stderr)
        paths = api.write_reports(res, build / "bench")
        print(f"{name}: wrote {paths['html']}", file=sys.stderr)
        results[name] = res

    env = next(iter(results.values()))["environment"]
    print(f"\nHeadline on {env['cpu_model']} ({env['logical_cpus']} CPUs; VNNI {env['isa_x86'].get('avx512_vnni')}, "
          f"AMX {env['isa_x86'].get('amx_int8')}, avx512_bf16 {env['isa_x86'].get('avx512_bf16')}), "
          f"engines {env['engines']}, load avg at start {env['load_avg']}; batch 1, single stream, preset {args.preset}\n")
    print("| model | engine | precision | executed | threads | p50 ms | p90 ms | runs | speedup vs fp32 |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for res in results.values():
        for r in headline_rows(res):
            print(r)
    print()
    for name, res in results.items():
        for n in res["analysis"]["notes"]:
            print(f"- [{name}] {n}")
    if "resnet18" in results:
        sp = ort_int8_speedups(results["resnet18"])
        met = bool(sp) and all(v >= 2.0 for v in sp.values())
        print("\nONNX Runtime int8-static vs fp32, ResNet-18-style: "
              + ", ".join(f"{v:.2f}x at {t} thread(s)" for t, v in sorted(sp.items()))
              + (" -> >= 2x: YES" if met else " -> >= 2x: NO"))
        return 0 if met else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
