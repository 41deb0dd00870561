"""`edgeship compile SOURCE ...`: argument parsing, the summary table, ``--json``.

Exit codes: 0 ok, 1 failed (incl. a gate breached), 2 bad input, 3 partial.
Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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
                   help="comma list: fp32,fp16,int8-static,int8-dynamic (ORT),int8 (each engine's default int8: "
                        "static on OpenVINO/TFLite, on ORT the recipe that fits the graph)")
    p.add_argument("--calibration", metavar="PATH", help=".npz/.npy, a directory of them, or file.py:fn")
    p.add_argument("--validation", metavar="PATH", help=".npz/.npy, a directory of them, or file.py:fn")
    p.add_argument("--labels", metavar="PATH", help="labels for --validation: file.npy or file.npz:key")
    p.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile"], default="minmax")
    p.add_argument("--task", choices=["classify", "embed", "detect", "segment", "regress"],
                   help="what the outputs mean; picks each output's fidelity metric (default: from the "
                        "factory's metadata, else inferred from the outputs' shape and values)")
    p.add_argument("--calibration-samples", type=int, default=128, metavar="N")
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor weight quantization")
    p.add_argument("--random-calibration", action="store_true", help="calibrate int8 on random data (prints a warning)")
    p.add_argument("--no-fallback", action="store_true",
                   help="accuracy-aware int8 off: do not keep the layers that break an int8 artifact's gates in float")
    p.add_argument("--max-accuracy-drop", type=float, metavar="PTS", help="fail when accuracy drops more (points)")
    p.add_argument("--atol", type=float, help="max abs error allowed (overrides per-precision defaults)")
    p.add_argument("--min-cosine", type=float, help="min per-sample cosine similarity allowed")
    p.add_argument("--fidelity-budget", type=float, metavar="X",
                   help="budget of the task's fidelity metric for every artifact (replaces the per-precision "
                        "defaults), e.g. --task embed --fidelity-budget 0.95")
    p.add_argument("--dynamic-axis", action="append", metavar="INPUT:AXIS:NAME", help="mark an axis dynamic (repeatable)")
    p.add_argument("--batch-axis", action="append", metavar="INPUT:AXIS|INPUT:none",
                   help="the batch axis of an input, or none (default: a batch-like dim name, else an unnamed "
                        "dynamic or size-1 axis 0); repeatable")
    p.add_argument("--input-shape", action="append", metavar="INPUT=D0,D1,...",
                   help="an example shape for an input with dynamic dims (random data, probe sizes); repeatable")
    p.add_argument("--allow-static", action="append", metavar="DIM",
                   help="a dynamic dim (name or input:axis) that may be built static when the export fixes it")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword argument for the factory (repeatable)")
    p.add_argument("--max-validation-samples", type=int, metavar="N")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--verbose", action="store_true",
                   help="full tracebacks, and third-party log output on the console instead of the log file")
    p.set_defaults(func=run)


def _explain_failure(e: BaseException, *, verbose: bool, log: Path) -> None:
    """What goes with the one error line: the full traceback (--verbose) or where the log is."""
    if verbose:
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    if not verbose and log.is_file() and log.stat().st_size:
        print(f"edgeship compile: third-party log output: {log} (--verbose shows it, and full tracebacks)",
              file=sys.stderr)
    elif log.is_file():
        log.unlink()


def _keep_log(log: Path, build_dir: Path) -> Path:
    """The log of a written build lives in it (``compile.log``)."""
    import shutil

    if not Path(build_dir, "manifest.json").is_file():
        return log
    dest = Path(build_dir) / "compile.log"
    shutil.move(str(log), dest)  # the temp dir may be another file system
    return dest


def third_party_logs(path: Path, *, verbose: bool):
    """Third-party output (native library logs on fd 2, Python warnings, absl/oneDNN chatter)
    goes to ``path`` instead of the console, unless ``verbose``."""
    from toolchain.compat import capture_native_logs

    return capture_native_logs(path, enabled=not verbose)


def options_from_args(args: argparse.Namespace):
    """Raises UsageError / SourceError on malformed values."""
    from toolchain.compile.context import QuantOptions
    from toolchain.compile.options import (
        CompileOptions, UsageError, parse_batch_axes, parse_dynamic_axes, parse_input_shapes, parse_precisions, parse_targets,
        parse_task,
    )
    from toolchain.compile.source import parse_factory_args
    from toolchain.compile.verify import UserGates

    _check_ranges(args)
    try:
        quant = QuantOptions(calibration_method=args.calibration_method, per_channel=not args.no_per_channel,
                             calibration_samples=args.calibration_samples, fallback=not args.no_fallback)
    except ValueError as e:
        raise UsageError(f"--calibration-method/--calibration-samples: {e}") from e
    return CompileOptions(
        source=args.source, name=args.name, out_dir=Path(args.out), targets=parse_targets(args.targets),
        precisions=parse_precisions(args.precisions), calibration=args.calibration, validation=args.validation,
        labels=args.labels, random_calibration=args.random_calibration,
        quant=quant,
        gates=UserGates(atol=args.atol, min_cosine=args.min_cosine, max_accuracy_drop_pts=args.max_accuracy_drop,
                        fidelity_budget=args.fidelity_budget),
        dynamic_axes=parse_dynamic_axes(args.dynamic_axis), factory_kwargs=parse_factory_args(args.arg),
        max_validation_samples=args.max_validation_samples, task=parse_task(args.task),
        batch_axes=parse_batch_axes(args.batch_axis), input_shapes=parse_input_shapes(args.input_shape),
        allow_static=tuple(args.allow_static or ()),
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
    from toolchain.compile.pipeline import compile_model
    from toolchain.console import Progress
    from toolchain.errors import ToolchainError

    # native converter logs (TensorFlow Lite's flatbuffer exporter, XNNPACK) go to stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    log_path = Path(tempfile.gettempdir()) / f"edgeship-compile-{os.getpid()}.log"  # nothing in --out before a build
    try:
        opts = options_from_args(args)
        with third_party_logs(log_path, verbose=args.verbose) as cap:
            progress = Progress(quiet=args.quiet, stream=cap.console)
            result = compile_model(opts, progress=progress, warn=progress.warn)
    except ToolchainError as e:  # each error carries its exit code; runtime.cliutil.run prints it
        _explain_failure(e, verbose=args.verbose, log=log_path)
        raise
    if cap.path is not None:
        kept = _keep_log(cap.path, result.build_dir)
        if not args.quiet:
            print(f"third-party log output (converters, native libraries): {kept}", file=sys.stderr)
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
    """The console summary: one row per artifact, judged by its task's fidelity metric."""
    from toolchain.console import fmt_float, fmt_pct, format_table, human_bytes

    rows = []
    for a in manifest["artifacts"]:
        v = a.get("verification") or {}
        fid = v.get("fidelity") or {}
        drop = v.get("accuracy_drop_pts")
        rows.append([
            a["id"], a.get("executed_precision"), human_bytes(a.get("size_bytes")),
            fid.get("metric"), fmt_metric(fid.get("metric"), fid.get("value")),
            fmt_metric(fid.get("metric"), fid.get("budget")),
            fmt_float(v.get("max_abs_error")), fmt_pct(v.get("accuracy")),
            None if drop is None else f"{drop:+.2f}", _sizes(a.get("verified_sizes")), a["status"],
        ])
    headers = ["artifact", "executes", "size", "fidelity", "value", "budget", "max-abs", "accuracy", "drop(pts)",
               "verified sizes", "status"]
    meta = manifest["model"].get("metadata") or {}
    title = f"{manifest['model']['name']}  (task {meta.get('task', '?')}; validation: {manifest['validation']['samples']} samples"
    ref_acc = manifest["validation"].get("reference_accuracy")
    title += f", reference accuracy {100 * ref_acc:.2f}%)" if ref_acc is not None else ")"
    if manifest["validation"].get("random"):
        title += "  [random inputs: parity only]"
    return title + "\n" + format_table(headers, rows, align="lllllrrrrll")


def fmt_metric(metric: str | None, value: float | None) -> str | None:
    """A fidelity figure in its metric's unit (top-1 as %, cosine to 5 places, dB, points)."""
    if value is None or metric is None:
        return None
    if metric == "top1_agreement":
        return f"{100 * value:.2f}%"
    if metric == "cosine_min":
        return f"{value:.5f}"
    if metric == "accuracy_drop_pts":
        return f"{value:+.2f} pts"
    if metric == "psnr_db":
        return f"{value:.1f} dB"
    return f"{value:.3g}"


def _sizes(sizes: dict | None) -> str | None:
    if not sizes:
        return None
    return " ".join(f"{k}={','.join(str(x) for x in v)}" for k, v in sizes.items())
