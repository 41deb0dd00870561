"""Headline table: int8 against fp32 on each engine for the reference models, measured in one run.

ResNet-18-style and MobileNetV2-style (224x224, batch 1, single stream), 1 and 2 threads,
every artifact of each build, each trial in a fresh process (``--repeats`` trials per cell).
The builds are compiled by this run (``edgeship compile ref:<model>``, random calibration:
the reference models are seeded, not trained, so only latency means anything); ``--reuse``
benches existing builds under ``--builds`` instead and prints which build and its manifest
hash. OpenVINO is compared at the precision the agent serves (fp32 IR pinned to f32, int8
without a hint); the engine's own choice (bf16 on CPUs that have it) is a separate row.

Each speedup is printed with its spread: the range of fp32/int8 over the trials (the
slowest fp32 trial against the fastest int8 one and the other way round). Targets
(``TARGETS``): ONNX Runtime int8-static >= 2x fp32 on the ResNet-18-style model at 1 and at
2 threads. A figure gets no verdict when 2 threads ran slower than 1 on the fp32 model (a
busy machine does that, a compute-bound model does not) or when the load average went above
the core count. Exit 1 on a miss, 3 when a figure is inconclusive.

    .venv/bin/python benchmarks/bench_headline.py [--builds DIR] [--reuse] [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import Load, LoadMonitor, Report, Target, slower_with_more_threads  # noqa: E402

MODELS = ("resnet18", "mobilenetv2")
TARGETS = {("resnet18", "onnxruntime", t): Target(f"resnet18 ORT int8-static vs fp32, {t} thread(s)", ">=", 2.0,
                                                  "x", fmt=".2f") for t in (1, 2)}
#: (engine, int8 precision, hint of the int8 cell, fp32 hint, row label)
PAIRS = (("onnxruntime", "int8-static", None, None, "ORT int8-static vs fp32"),
         ("openvino", "int8", None, "f32", "OpenVINO int8 vs fp32 at f32 (as served)"),
         ("openvino", "int8", None, None, "OpenVINO int8 vs fp32 in the engine's default (bf16 pair)"),
         ("tflite", "int8", None, None, "TFLite int8 vs fp32"))


def ensure_build(root: Path, name: str, reuse: bool) -> tuple[Path, str]:
    """The build of ``ref:name`` under ``root`` and how it came to be ("compiled" | "reused")."""
    build = root / name
    if reuse and (build / "manifest.json").exists():
        return build, "reused"
    print(f"compiling ref:{name} into {root} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "toolchain.cli", "compile", f"ref:{name}", "--out", str(root),
                    "--precisions", "fp32,int8-static,int8", "--random-calibration"], cwd=ROOT, check=True)
    return build, "compiled"


def _cell(res: dict, engine: str, precision: str, hint: str | None, threads: int) -> dict | None:
    return next((c for c in res["cells"] if c["engine"] == engine and c["precision"] == precision
                 and c.get("precision_hint") == hint and c["threads"] == threads
                 and c["scenario"] == "single_stream" and c["status"] == "ok"), None)


def speedup_figures(res: dict) -> list[dict]:
    """Per engine pair and thread count: fp32/int8 p50 ratio, its range over trials, both cells."""
    out = []
    threads = sorted({c["threads"] for c in res["cells"]})
    for engine, prec, hint, fp_hint, label in PAIRS:
        for t in threads:
            q, f = _cell(res, engine, prec, hint, t), _cell(res, engine, "fp32", fp_hint, t)
            if q is None or f is None:
                continue
            qs, fs = [x for x in q["trial_p50_s"] if x], [x for x in f["trial_p50_s"] if x]
            ratio = f["stats"]["percentiles_s"]["p50"] / q["stats"]["percentiles_s"]["p50"]
            interval = (min(fs) / max(qs), max(fs) / min(qs)) if len(qs) > 1 and len(fs) > 1 else None
            out.append({"engine": engine, "label": label, "threads": t, "ratio": ratio, "interval": interval,
                        "fp32_hint": fp_hint, "fp32_executed": f.get("executed_precision"),
                        "int8_executed": q.get("executed_precision"), "trials": min(len(qs), len(fs))})
    return out


def fp32_by_threads(res: dict, engine: str, hint: str | None) -> dict[int, float]:
    return {c["threads"]: c["stats"]["percentiles_s"]["p50"] for c in res["cells"]
            if c["engine"] == engine and c["precision"] == "fp32" and c.get("precision_hint") == hint
            and c["scenario"] == "single_stream" and c["status"] == "ok"}


def verdicts(per_model: dict[str, tuple[dict, Load | None]]) -> Report:
    """Verdict and info rows from each model's bench result and the load during it (pure)."""
    rep = Report()
    judged = set()
    for name, (res, load) in per_model.items():
        for fig in speedup_figures(res):
            key = (name, fig["engine"], fig["threads"])
            refuse = slower_with_more_threads(fp32_by_threads(res, fig["engine"], fig["fp32_hint"]),
                                              what=f"{name} fp32 on {fig['engine']}")
            note = (f"fp32 runs {fig['fp32_executed']}, int8 runs {fig['int8_executed']}; "
                    f"spread = range over {fig['trials']} trials")
            values = [fig["ratio"]]
            if key in TARGETS and fig["fp32_hint"] == ("f32" if fig["engine"] == "openvino" else None):
                rep.judge(TARGETS[key], values, interval=fig["interval"], load=load, refuse=[refuse], note=note)
                judged.add(key)
            else:
                rep.info(f"{name} {fig['label']}, {fig['threads']} thread(s)", values, unit="x", fmt=".2f",
                         interval=fig["interval"], load=load,
                         note=note + (f"; caution: {refuse}" if refuse else ""))
    for key in sorted(k for k in TARGETS if k[0] in per_model and k not in judged):
        rep.judge(TARGETS[key], [], note="a cell of the pair failed or is missing")  # "not measured": exit 3
    return rep


def headline_rows(res: dict) -> list[str]:
    from toolchain.bench.report_md import fmt_ms

    sp = res["analysis"]["speedups"]
    rows = []
    cells = [c for c in res["cells"] if c["scenario"] == "single_stream"]
    cells.sort(key=lambda c: (c["engine"], c.get("precision_hint") or "", c["threads"], c["precision"] != "fp32"))
    name = res["source"]["model"].get("name")
    for c in cells:
        if c["status"] != "ok":
            rows.append(f"| {name} | {c['engine']} | {c['precision']} | | {c['threads']} | FAILED: "
                        f"{c['errors'][0]['message'][:80]} | | | | |")
            continue
        pc = c["stats"]["percentiles_s"]
        s = sp.get(c["key"], {}).get("speedup")
        hint = f" (hint {c['precision_hint']})" if c.get("precision_hint") else ""
        trials = ", ".join(fmt_ms(x) for x in c["trial_p50_s"])
        rows.append(f"| {name} | {c['engine']}{hint} | {c['precision']} | {c['executed_precision']} | {c['threads']} | "
                    f"{fmt_ms(pc['p50'])} | {trials} | {fmt_ms(pc['p90'])} | {c['stats']['count']} | "
                    f"{'%.2fx' % s if s else '-'} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builds", type=Path, default=None, help="build root (default: a temporary directory)")
    ap.add_argument("--reuse", action="store_true", help="bench existing builds under --builds, do not compile")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per trial")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process trials per cell")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    if args.reuse and args.builds is None:
        ap.error("--reuse needs --builds DIR")

    from runtime.bench.spec import RunLength
    from toolchain.bench import api

    length = RunLength(warmup_min_iters=10, warmup_min_s=1.0, min_iters=100, min_duration_s=args.seconds,
                       max_duration_s=args.seconds * 10, cooldown_s=0.5)
    threads = tuple(int(t) for t in args.threads.split(","))
    root = args.builds or Path(tempfile.mkdtemp(prefix="edgeship-headline-"))
    per_model, provenance = {}, []
    for name in args.models.split(","):
        build, how = ensure_build(root, name, args.reuse)
        cfg = api.make_config(threads=threads, batches=(1,), ov_precision="both", seed=1, repeats=args.repeats,
                              run_length=length)
        with LoadMonitor() as mon:
            res = api.bench(build, config=cfg, out_dir=build / "bench", progress=sys.stderr)
        paths = api.write_reports(res, build / "bench")
        provenance.append(f"{name}: {how} {build} (manifest sha256 {res['source']['manifest_sha256'][:16]}...), "
                          f"report {paths['html']}")
        per_model[name] = (res, mon.load())

    env = next(iter(per_model.values()))[0]["environment"]
    print(f"\nHeadline on {env['cpu_model']} ({env['logical_cpus']} CPUs; VNNI {env['isa_x86'].get('avx512_vnni')}, "
          f"AMX {env['isa_x86'].get('amx_int8')}, avx512_bf16 {env['isa_x86'].get('avx512_bf16')}), engines "
          f"{env['engines']}; batch 1, single stream, {args.repeats} trials x >= {args.seconds:g} s per cell")
    for line in provenance:
        print(f"  {line}")
    print("\n| model | engine | precision | executed | threads | p50 ms (pooled) | trial p50s ms | p90 ms | runs "
          "| speedup vs fp32 |")
    print("|---|---|---|---|---:|---:|---|---:|---:|---:|")
    for res, _ in per_model.values():
        for r in headline_rows(res):
            print(r)
    print()
    rep = verdicts(per_model)
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
