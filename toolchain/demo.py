"""`make demo`: compile the reference models for every target and print the result tables.

- ``digits``: small CNN trained on scikit-learn's bundled digits; real calibration and
  held-out validation data with labels, so the table shows real accuracy and int8 drop.
- ``mobilenetv2`` / ``resnet18`` at 224x224: seeded random-init networks for size and latency.
  They have no real data, so they are calibrated on random inputs (``random_calibration``,
  which prints a warning) and verified for parity only.

Then every build is benchmarked (``edgeship bench``) and its report written to
``<build>/bench/report.html``. Run ``python -m toolchain.demo [--out build] [--quick] [--no-bench]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: (name, source, factory kwargs for --quick runs)
DEMO_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("digits", "ref:digits", {}),
    ("mobilenetv2", "ref:mobilenetv2", {"image_size": 64, "width_mult": 0.5}),
    ("resnet18", "ref:resnet18", {"image_size": 64, "width": 16}),
)


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = Path("build")
    quick: bool = False  # small input sizes, for a fast smoke run
    models: tuple[str, ...] = field(default_factory=lambda: tuple(m[0] for m in DEMO_MODELS))


def compile_reference_models(cfg: DemoConfig) -> list[Any]:
    """Compile each demo model for every target/precision; returns the CompileResults."""
    from toolchain.compile.context import QuantOptions
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.console import Progress

    results = []
    for name, source, quick_kwargs in DEMO_MODELS:
        if name not in cfg.models:
            continue
        print(f"\n=== edgeship compile {source}" + (f" {quick_kwargs}" if cfg.quick and quick_kwargs else "") + " ===",
              file=sys.stderr, flush=True)
        real_data = name == "digits"
        opts = CompileOptions(
            source=source, name=name, out_dir=cfg.out_dir,
            factory_kwargs=quick_kwargs if cfg.quick else {},
            random_calibration=not real_data,
            quant=QuantOptions(calibration_samples=128 if real_data else 32),
        )
        progress = Progress()
        results.append(compile_model(opts, progress=progress, warn=progress.warn))
    return results


def print_compile_report(results: list[Any]) -> None:
    from toolchain.compile.cli import summary_table

    for r in results:
        print()
        print(summary_table(r.manifest))
        print(f"build: {r.build_dir}  status: {r.manifest['status']}")
        for a in r.manifest["artifacts"]:
            if a["status"] != "ok":
                print(f"  {a['id']} {a['status']}: {a['error']}")


def latency_report(results: list[Any], cfg: DemoConfig) -> None:
    """Benchmark every build that produced artifacts (1 and 2 threads, batch 1, single-stream),
    write ``<build>/bench/report.{json,md,html}`` and print the tables and recommendations.

    ``--quick`` uses a short smoke run length: its figures show the pipeline works, not latency.
    """
    from toolchain.bench import api

    builds = [r.build_dir for r in results if getattr(r, "build_dir", None) and Path(r.build_dir, "manifest.json").exists()]
    if not builds:
        print("latency report: no build produced a manifest; nothing to measure", file=sys.stderr)
        return
    print(f"\n=== edgeship bench: {len(builds)} build(s), every artifact at 1 and 2 threads, "
          f"each cell in a fresh process ({'smoke run' if cfg.quick else 'preset quick, ~12 s a cell'}) ===",
          file=sys.stderr, flush=True)
    api.report_builds(builds, smoke=cfg.quick, threads=(1, 2), max_accuracy_drop=1.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolchain.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build")
    p.add_argument("--quick", action="store_true", help="small input sizes (smoke run)")
    p.add_argument("--models", default=",".join(m[0] for m in DEMO_MODELS))
    p.add_argument("--no-bench", action="store_true", help="compile only, skip the latency report")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = DemoConfig(out_dir=Path(args.out), quick=args.quick, models=tuple(args.models.split(",")))
    results = compile_reference_models(cfg)
    print_compile_report(results)
    if not args.no_bench:
        latency_report(results, cfg)
    codes = {r.exit_code for r in results}
    return 1 if 1 in codes else 3 if 3 in codes else 0


if __name__ == "__main__":
    sys.exit(main())
