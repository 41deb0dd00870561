"""`edgeship compile SOURCE ...`: argument parsing, the summary table, ``--json``.

Exit codes: 0 ok, 1 failed (incl. a gate breached), 2 bad input, 3 partial.
Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compile", help="export a PyTorch model and build verified artifacts for every runtime",
        description="Compile SOURCE (file.py:fn factory, ref:<name>, model.pt2 or model.onnx) into "
                    "verified ONNX Runtime / OpenVINO / TFLite artifacts under OUT/<name>/.",
    )
    p.add_argument("source", metavar="SOURCE", help="file.py:build | ref:digits|mobilenetv2|resnet18 | model.pt2 | model.onnx")
    p.add_argument("--name", help="model name (default: from the source)")
    p.add_argument("--out", default="build", help="output root (default: build)")
    p.add_argument("--targets", default="onnxruntime,openvino,tflite", help="comma list of engines")
    p.add_argument("--precisions", default="fp32,fp16,int8-static,int8-dynamic,int8",
                   help="comma list: fp32,fp16,int8-static,int8-dynamic (ORT),int8 (each engine's static int8)")
    p.add_argument("--calibration", metavar="PATH", help=".npz/.npy, a directory of them, or file.py:fn")
    p.add_argument("--validation", metavar="PATH", help=".npz/.npy, a directory of them, or file.py:fn")
    p.add_argument("--labels", metavar="PATH", help="labels for --validation: file.npy or file.npz:key")
    p.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile"], default="minmax")
    p.add_argument("--calibration-samples", type=int, default=128, metavar="N")
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor weight quantization")
    p.add_argument("--random-calibration", action="store_true", help="calibrate int8 on random data (prints a warning)")
    p.add_argument("--no-fallback", action="store_true",
                   help="accuracy-aware int8 off: do not keep the layers that break an int8 artifact's gates in float")
    p.add_argument("--max-accuracy-drop", type=float, metavar="PTS", help="fail when accuracy drops more (points)")
    p.add_argument("--atol", type=float, help="max abs error allowed (overrides per-precision defaults)")
    p.add_argument("--min-cosine", type=float, help="min per-sample cosine similarity allowed")
    p.add_argument("--dynamic-axis", action="append", metavar="INPUT:AXIS:NAME", help="mark an axis dynamic (repeatable)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword argument for the factory (repeatable)")
    p.add_argument("--max-validation-samples", type=int, metavar="N")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    """Raises UsageError / SourceError on malformed values."""
    from toolchain.compile.context import QuantOptions
    from toolchain.compile.options import CompileOptions, parse_dynamic_axes, parse_precisions, parse_targets
    from toolchain.compile.source import parse_factory_args
    from toolchain.compile.verify import UserGates

    _check_ranges(args)
    return CompileOptions(
        source=args.source, name=args.name, out_dir=Path(args.out), targets=parse_targets(args.targets),
        precisions=parse_precisions(args.precisions), calibration=args.calibration, validation=args.validation,
        labels=args.labels, random_calibration=args.random_calibration,
        quant=QuantOptions(calibration_method=args.calibration_method, per_channel=not args.no_per_channel,
                           calibration_samples=args.calibration_samples, fallback=not args.no_fallback),
        gates=UserGates(atol=args.atol, min_cosine=args.min_cosine, max_accuracy_drop_pts=args.max_accuracy_drop),
        dynamic_axes=parse_dynamic_axes(args.dynamic_axis), factory_kwargs=parse_factory_args(args.arg),
        max_validation_samples=args.max_validation_samples,
    )


def _check_ranges(args: argparse.Namespace) -> None:
    """Numeric options out of range are bad input (exit 2), refused before any work."""
    from toolchain.compile.options import UsageError

    checks = (("--calibration-samples", args.calibration_samples, lambda v: v >= 1, "an integer >= 1"),
              ("--max-validation-samples", args.max_validation_samples, lambda v: v >= 1, "an integer >= 1"),
              ("--max-accuracy-drop", args.max_accuracy_drop, lambda v: v >= 0, "points >= 0"),
              ("--atol", args.atol, lambda v: v >= 0, ">= 0"),
              ("--min-cosine", args.min_cosine, lambda v: -1 <= v <= 1, "in [-1, 1]"))
    for flag, value, ok, want in checks:
        if value is not None and not ok(value):
            raise UsageError(f"{flag} {value}: must be {want}")


def run(args: argparse.Namespace) -> int:
    from toolchain.compile.options import UsageError
    from toolchain.compile.pipeline import compile_model
    from toolchain.console import Progress
    from toolchain.errors import DataError, ExportError, MissingExtraError, SourceError, ToolchainError

    # native converter logs (TensorFlow Lite's flatbuffer exporter, XNNPACK) go to stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    progress = Progress(quiet=args.quiet)
    try:
        opts = options_from_args(args)
        result = compile_model(opts, progress=progress, warn=progress.warn)
    except (UsageError, SourceError, DataError, MissingExtraError) as e:
        print(f"edgeship compile: error: {e}", file=sys.stderr)
        return 2
    except (ExportError, ToolchainError) as e:
        print(f"edgeship compile: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.manifest, indent=2, sort_keys=True))
    else:
        print(summary_table(result.manifest))
        print(f"\nbuild: {result.build_dir}  status: {result.manifest['status']}")
    for a in result.manifest["artifacts"]:
        if a["status"] != "ok":
            print(f"edgeship compile: {a['id']} {a['status']}: {a['error']}", file=sys.stderr)
    return result.exit_code


def summary_table(manifest: dict) -> str:
    """The console summary: one row per artifact."""
    from toolchain.console import fmt_float, fmt_pct, format_table, human_bytes

    rows = []
    for a in manifest["artifacts"]:
        v = a.get("verification") or {}
        drop = v.get("accuracy_drop_pts")
        rows.append([
            a["id"], a["engine"], a["precision"], a.get("executed_precision"), human_bytes(a.get("size_bytes")),
            fmt_float(v.get("max_abs_error")), fmt_float(v.get("cosine_min"), ".5f"),
            fmt_pct(v.get("top1_agreement")), fmt_pct(v.get("accuracy")),
            None if drop is None else f"{drop:+.2f}", a["status"],
        ])
    headers = ["artifact", "engine", "precision", "executes", "size", "max-abs", "cos-min", "top1-agree", "accuracy", "drop(pts)", "status"]
    title = f"{manifest['model']['name']}  (validation: {manifest['validation']['samples']} samples"
    ref_acc = manifest["validation"].get("reference_accuracy")
    title += f", reference accuracy {100 * ref_acc:.2f}%)" if ref_acc is not None else ")"
    return title + "\n" + format_table(headers, rows, align="llllrrrrrrl")
