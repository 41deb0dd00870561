"""Figures issue 2 must reach, measured in one run and printed with PASS/FAIL:

1. digits CNN (trained on sklearn digits): int8 accuracy drop vs fp32 on each of ONNX Runtime,
   OpenVINO and TFLite -- must be <= 1.0 point (held-out validation split, 450 images);
2. ResNet-18-style at 224x224: fp32 ONNX size / int8 (static QDQ) ONNX size -- must be >= 3.5x.

Usage: ``python benchmarks/compile_figures.py [--out build/figures]``. Every number printed
is read from the manifests of builds made by this run. Both figures are deterministic (no
timing): judged on their value by the shared rules (``_verdict``, exact rows); a figure whose
artifact failed to build or verify counts as a miss. Exit 1 on a miss, else 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _verdict import Report, Target  # noqa: E402

MAX_DROP_PTS = 1.0
MIN_SIZE_RATIO = 3.5
ENGINES = ("onnxruntime", "openvino", "tflite")
TARGETS = {
    **{f"drop_{e}": Target(f"digits int8 drop vs fp32 on {e}", "<=", MAX_DROP_PTS, "pts", ".2f", load="none")
       for e in ENGINES},
    "size_ratio": Target("resnet18 fp32/int8 ONNX size ratio", ">=", MIN_SIZE_RATIO, "x", ".2f", load="none"),
    "missing": Target("figures not measured (artifact failed to build or verify)", "<=", 0, "", ".0f",
                      load="none"),
}


def verdicts(figures: dict[str, float | None]) -> Report:
    """The verdict rows (pure): ``figures[key]`` per TARGETS key, None where not measured."""
    report = Report("\ncompile figures (exact: no timing)")
    report.judge(TARGETS["missing"], sum(v is None for v in figures.values()), exact=True)
    for key, value in figures.items():
        if value is not None:
            report.judge(TARGETS[key], value, exact=True)
    return report


def _compile(source: str, out: Path, precisions, targets, **kw):
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.console import Progress

    p = Progress()
    return compile_model(CompileOptions(source=source, out_dir=out, precisions=precisions, targets=targets, **kw),
                         progress=p, warn=p.warn)


def digits_figures(out: Path) -> dict[str, float | None]:
    from runtime.spec import Engine
    from toolchain.compile.verify import Precision

    res = _compile("ref:digits", out, (Precision.FP32, Precision.INT8), tuple(Engine))
    m = res.manifest
    by = {(a["engine"], a["precision"]): a for a in m["artifacts"]}
    print(f"\ndigits: reference (PyTorch fp32) accuracy {100 * m['validation']['reference_accuracy']:.2f}% "
          f"on {m['validation']['samples']} held-out images")
    rows: dict[str, float | None] = {}
    for engine, int8 in (("onnxruntime", "int8-static"), ("openvino", "int8"), ("tflite", "int8")):
        fp32, q = by.get((engine, "fp32")), by.get((engine, int8))
        if not (fp32 and q and fp32.get("verification") and q.get("verification")):
            err = (q or {}).get("error") or (fp32 or {}).get("error")
            print(f"  {engine:12s} int8 drop: not measured ({err})")
            rows[f"drop_{engine}"] = None
            continue
        a32, a8 = fp32["verification"]["accuracy"], q["verification"]["accuracy"]
        drop = 100 * (a32 - a8)
        print(f"  {engine:12s} fp32 {100 * a32:6.2f}%  {int8:12s} {100 * a8:6.2f}%  drop {drop:+.2f} pts "
              f"(vs PyTorch: {q['verification']['accuracy_drop_pts']:+.2f})  top1 agreement "
              f"{100 * q['verification']['top1_agreement']:.2f}%")
        rows[f"drop_{engine}"] = drop
    return rows


def resnet_figures(out: Path) -> dict[str, float | None]:
    from runtime.spec import Engine
    from toolchain.compile.context import QuantOptions
    from toolchain.compile.verify import Precision

    res = _compile("ref:resnet18", out, (Precision.FP32, Precision.INT8_STATIC), (Engine.ONNXRUNTIME,),
                   random_calibration=True, quant=QuantOptions(calibration_samples=16), max_validation_samples=8)
    by = {a["precision"]: a for a in res.manifest["artifacts"]}
    f32, i8 = by["fp32"].get("size_bytes"), by["int8-static"].get("size_bytes")
    if not (f32 and i8):
        print(f"\nresnet18: not measured ({by['int8-static'].get('error')})")
        return {"size_ratio": None}
    ratio = f32 / i8
    print(f"\nresnet18 (224x224): fp32 ONNX {f32 / 2**20:.2f} MiB, int8 QDQ ONNX {i8 / 2**20:.2f} MiB, "
          f"ratio {ratio:.2f}x (int8 cosine vs fp32 {by['int8-static']['verification']['cosine_min']:.4f})")
    return {"size_ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="build root (default: a temporary directory)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="edgeship-figures-"))
    report = verdicts(digits_figures(out) | resnet_figures(out))
    report.print()
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
