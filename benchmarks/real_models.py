"""Real pretrained models x engine x precision: fidelity, size and latency, measured in one run.

    python benchmarks/real_models.py [--models minilm,mtcnn-onet] [--quick] [--out DIR]

For every installed corpus model (``make corpus``; :mod:`toolchain.models.corpus`) this
compiles fp32 and the default int8 of every engine that can take it, on the model's real
calibration/validation data, then benchmarks every artifact that verified at batch 1 with
1 and 2 threads (each cell in its own process, all in this one run) and prints per row:
status (the reason when failed), the fidelity figure the model's task calls for, size,
p50 at 1 and 2 threads, and the speedup against fp32 of the same engine.

Verdicts by the shared rules (``benchmarks/_verdict.py``; exit 0 PASS, 1 FAIL, 3 inconclusive):

- MiniLM: the default int8 of ONNX Runtime and of OpenVINO keeps min cosine >= 0.99 against
  PyTorch on real sentences (compiled with ``--min-cosine 0.99``, so the accuracy-aware loop
  aims at it) and runs >= 1.7x faster than fp32 of the same engine at batch 1, 1 thread. The
  speedup is judged on the p50 confidence intervals: both bounds above 1.7 PASS, both below
  FAIL, straddling it (or measured while the load average was above the core count) "inconclusive"
  (this 2-core machine is shared).
- Corpus coverage: every int8 either verified within its budget or failed with a reason that
  names something (op, layer, engine limit); a bare or empty reason is a FAIL.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.bench.spec import RunLength  # noqa: E402
from toolchain.console import format_table, human_bytes  # noqa: E402
from toolchain.errors import ToolchainError  # noqa: E402
from toolchain.models import corpus  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import Load, LoadMonitor, Report, Row, Target, judge  # noqa: E402

RUN = RunLength(warmup_min_iters=5, warmup_min_s=0.5, min_iters=100, min_duration_s=3.0, max_duration_s=20.0)
QUICK_RUN = RunLength(warmup_min_iters=3, warmup_min_s=0.2, min_iters=40, min_duration_s=1.0, max_duration_s=8.0)
MINILM_MIN_COSINE, MINILM_MIN_SPEEDUP = 0.99, 1.7
DEFAULT_MODELS = ("minilm", "mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet", "ppocr-det", "ppocr-cls", "ppocr-rec",
                  "silero-vad", "mp-face-detection", "mp-selfie-segmentation", "mp-hand-landmark")


def compile_one(m: corpus.CorpusModel, out: Path, *, quick: bool, engines: tuple[str, ...]) -> dict:
    """Compile fp32 + int8 of ``m`` on every engine it can take; returns the manifest."""
    from runtime.spec import Engine
    from toolchain.compile.context import QuantOptions
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision, UserGates
    from toolchain.console import Progress

    kwargs = {"seq_len": 16} if quick and m.name == "minilm" else {}
    extra = {"batch_axes": dict(m.batch_axes)} if m.batch_axes else {}
    opts = CompileOptions(
        source=str(m.path()) if not m.is_factory else m.source, name=m.name, out_dir=out,
        targets=tuple(Engine(e) for e in m.engines if e in engines), precisions=(Precision.FP32, Precision.INT8),
        calibration=m.calibration_spec, validation=m.validation_spec, factory_kwargs=kwargs,
        gates=UserGates(min_cosine=MINILM_MIN_COSINE) if m.name == "minilm" else UserGates(),
        quant=QuantOptions(calibration_samples=16 if quick else 128),
        max_validation_samples=12 if quick else None, **extra,
    )
    progress = Progress()
    print(f"\n=== compile {m.name} ({m.note}) ===", file=sys.stderr, flush=True)
    return compile_model(opts, progress=progress, warn=progress.warn).manifest


def bench_build(build: Path, *, run: RunLength) -> dict[str, dict[int, dict]]:
    """``{artifact id: {threads: cell}}`` for every verified artifact of a build (batch 1)."""
    from toolchain.bench import api

    res = api.bench(build, config=api.make_config(threads=(1, 2), run_length=run), out_dir=build / "bench")
    return _cells_by_artifact(res)


def bench_file(path: Path, *, run: RunLength, out: Path) -> dict[int, dict]:
    from toolchain.bench import api

    res = api.bench(path, config=api.make_config(threads=(1, 2), run_length=run), out_dir=out)
    return next(iter(_cells_by_artifact(res).values()), {})


def _cells_by_artifact(res: dict) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for c in res["cells"]:
        aid = c.get("artifact") or c["key"].split("__")[0]
        if c.get("batch", 1) == 1:
            out.setdefault(aid, {})[int(c["threads"])] = c
    return out


def p50_ms(cell: dict | None) -> float | None:
    if not cell or cell.get("status") != "ok":
        return None
    return cell["stats"]["percentiles_s"]["p50"] * 1e3


def p50_ci_ms(cell: dict | None) -> tuple[float, float] | None:
    ci = ((cell or {}).get("stats") or {}).get("ci_s", {}) or {}
    ci = ci.get("p50") if isinstance(ci, dict) else None
    return (ci[0] * 1e3, ci[1] * 1e3) if ci else None


def fidelity(a: dict, task: str) -> str:
    """The figure the model's task calls for (the artifact's own fidelity metric when it has one)."""
    v = a.get("verification") or {}
    fid = v.get("fidelity")
    if isinstance(fid, dict) and fid.get("value") is not None:
        return f"{fid['metric']} {fid['value']:.4g}"
    if not v:
        return "-"
    if task == "embed":
        return f"cos-min {v['cosine_min']:.4f}"
    if task == "classify":
        if v.get("accuracy") is not None:
            return f"acc {100 * v['accuracy']:.1f}% (drop {v['accuracy_drop_pts']:+.2f})"
        if v.get("top1_agreement") is not None:
            return f"top1-agree {100 * v['top1_agreement']:.1f}%"
    return f"cos-min {v['cosine_min']:.4f}, max-abs {v['max_abs_error']:.3g}"


def _speedup(fp32: dict | None, int8: dict | None) -> tuple[float | None, tuple[float, float] | None]:
    a, b = p50_ms(fp32), p50_ms(int8)
    if a is None or b is None:
        return None, None
    ca, cb = p50_ci_ms(fp32), p50_ci_ms(int8)
    bounds = (ca[0] / cb[1], ca[1] / cb[0]) if ca and cb else None
    return a / b, bounds


def rows_for(m: corpus.CorpusModel, manifest: dict, cells: dict[str, dict[int, dict]],
             engines: tuple[str, ...]) -> list[list]:
    rows = []
    arts = {a["id"]: a for a in manifest["artifacts"]}
    for aid, a in arts.items():
        c = cells.get(aid, {})
        fp32 = cells.get(f"{a['engine']}-fp32", {})
        status = a["status"] if a["status"] == "ok" else f"{a['status']}: {(a.get('error') or '')[:100]}"
        fb = (a.get("recipe") or {}).get("fallback") or {}
        if fb.get("count"):
            status += f" (fallback: {fb['count']} layer(s) float)"
        sp1, _ = _speedup(fp32.get(1), c.get(1)) if a["precision"] != "fp32" else (None, None)
        sp2, _ = _speedup(fp32.get(2), c.get(2)) if a["precision"] != "fp32" else (None, None)
        rows.append([m.name, a["engine"], a["precision"], status, fidelity(a, m.task), human_bytes(a.get("size_bytes")),
                     _ms(p50_ms(c.get(1))), _ms(p50_ms(c.get(2))), _x(sp1), _x(sp2)])
    for engine in ("onnxruntime", "openvino", "tflite"):
        if engine not in m.engines:
            why = "no PyTorch source: litert-torch converts from torch.export, not ONNX" if engine == "tflite" else "n/a"
        elif engine not in engines:
            why = "not asked for (--engines)"
        else:
            continue
        rows.append([m.name, engine, "int8", f"not built: {why}", "-", "-", "-", "-", "-", "-"])
    return rows


def _ms(v: float | None) -> str | None:
    return None if v is None else f"{v:.3f}"


def _x(v: float | None) -> str | None:
    return None if v is None else f"{v:.2f}x"


def _targets(engine: str) -> tuple[Target, Target]:
    return (Target(f"minilm {engine} int8 min cosine vs PyTorch", ">=", MINILM_MIN_COSINE, "", ".4f", load="none"),
            Target(f"minilm {engine} int8 speedup vs fp32 (b1 t1, p50 CIs)", ">=", MINILM_MIN_SPEEDUP, "x", ".2f",
                   load="either"))


NOT_BUILT = Target("minilm int8 artifacts missing or not verified", "<=", 0, "", ".0f", load="none")
BARE = Target("corpus int8 failures whose reason names nothing", "<=", 0, "", ".0f", load="none")


def minilm_verdicts(manifest: dict, cells: dict[str, dict[int, dict]], *, load: Load | None) -> list[Row]:
    """The MiniLM goals (pure): min cosine (exact) and the speedup judged on the interval the
    two p50 confidence intervals give (straddling it, or under load, is inconclusive)."""
    rows, missing = [], []
    arts = {a["id"]: a for a in manifest["artifacts"]}
    for engine in ("onnxruntime", "openvino"):
        a = arts.get(f"{engine}-int8")
        if a is None or a["status"] != "ok":
            missing.append(f"{engine}: {a and a.get('error')}")
            continue
        cos_t, sp_t = _targets(engine)
        rows.append(judge(cos_t, a["verification"]["cosine_min"], exact=True))
        sp, bounds = _speedup(cells.get(f"{engine}-fp32", {}).get(1), cells.get(f"{engine}-int8", {}).get(1))
        rows.append(judge(sp_t, [] if sp is None else sp, interval=bounds, load=load,
                          refuse=[None if bounds else "no p50 confidence interval (too few samples)"]))
    return [judge(NOT_BUILT, len(missing), exact=True, note="; ".join(missing))] + rows


def coverage_verdict(manifests: dict[str, dict]) -> Row:
    """Every int8 either verified within its budget or failed with a reason that names something (pure)."""
    bare = []
    ok = total = 0
    for name, man in manifests.items():
        for a in man["artifacts"]:
            if a["precision"] == "fp32":
                continue
            total += 1
            ok += a["status"] == "ok"
            err = (a.get("error") or "").strip()
            if a["status"] != "ok" and (not err or err.rstrip(":").endswith("Error")):
                bare.append(f"{name}/{a['id']}")
    note = f"{ok}/{total} int8 artifacts within budget" + (f"; bare reasons: {bare}" if bare else "")
    return judge(BARE, len(bare), exact=True, note=note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--quick", action="store_true", help="short sentences, few samples, short bench cells")
    ap.add_argument("--out", type=Path, help="build root (default: a temporary directory)")
    ap.add_argument("--engines", default="onnxruntime,openvino,tflite",
                    help="engines to build (the others are reported as not built)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgeship-real-models-"))
    run = QUICK_RUN if args.quick else RUN
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    rows, manifests, missing = [], {}, []
    minilm = None
    with LoadMonitor() as mon:  # the load over the whole run: the speedup's cells are spread across it
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            m = corpus.get(name)
            if not m.installed():
                missing.append(f"{name} ({m.package}: run `make corpus`)")
                continue
            if m.source.endswith(".tflite"):  # shipped compiled: a bench input only
                cells = bench_file(m.path(), run=run, out=out / name / "bench")
                shipped = (cells.get(1) or {}).get("executed_precision") or "?"
                rows.append([name, "tflite", f"as shipped ({shipped})", "ok (bench input; int8 needs the source model)", "-",
                             human_bytes(m.path().stat().st_size), _ms(p50_ms(cells.get(1))), _ms(p50_ms(cells.get(2))), "-", "-"])
                continue
            try:
                manifest = compile_one(m, out, quick=args.quick, engines=engines)
            except (ToolchainError, TypeError) as e:  # refused before any artifact (data, shapes, options)
                rows.append([name, ",".join(m.engines), "all", f"refused: {type(e).__name__}: {str(e)[:100]}",
                             "-", "-", "-", "-", "-", "-"])
                manifests[name] = {"artifacts": [{"id": f"{name}-int8", "precision": "int8", "status": "failed",
                                                  "error": f"{type(e).__name__}: {e}"}]}
                continue
            manifests[name] = manifest
            cells = bench_build(out / name, run=run)
            rows += rows_for(m, manifest, cells, engines)
            if name == "minilm":
                minilm = (manifest, cells)
    print()
    print(format_table(["model", "engine", "precision", "status", "fidelity", "size", "p50 t1 ms", "p50 t2 ms",
                        "speedup t1", "speedup t2"], rows, align="llllllrrrr"))
    if missing:
        print(f"\nnot installed (skipped): {', '.join(missing)}")
    report = Report()
    if minilm is not None:
        report.rows += minilm_verdicts(*minilm, load=mon.load())
    report.rows.append(coverage_verdict(manifests))
    print()
    report.print()
    print(f"\nbuilds: {out}")
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
