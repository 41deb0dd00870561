"""Python API of ``edgeship bench`` (used by the CLI and by ``toolchain.demo``).

    result = bench_build("build/resnet18", preset="quick", threads=(1, 2), out_dir="build/resnet18/bench")
    paths = write_reports(result, "build/resnet18/bench")

Every cell runs in a fresh process; ``out_dir`` receives ``samples/*.npy`` (raw per-run
latencies) and ``cells/`` (per-trial specs and results) while measuring.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from runtime.bench import fingerprint
from runtime.bench.spec import Preset, RunLength
from runtime.fsutil import atomic_write_bytes

from toolchain.console import STDERR, STDOUT

from . import analysis, report_html, report_md, result as result_mod, runner
from .errors import BenchInputError
from .plan import BenchConfig, OvPrecision, Source, plan_cells, read_source


def make_config(*, preset: Preset | str = Preset.QUICK, batches: Sequence[int] = (1,),
                threads: Sequence[int] = (1,), streams: Sequence[int] = (1,), repeats: int | None = None,
                pin: str = "none", seed: int = 0, ov_precision: OvPrecision | str = OvPrecision.DEPLOY,
                max_accuracy_drop: float | None = None, run_length: RunLength | None = None,
                engines: Sequence[str] | None = None, artifacts: Sequence[str] | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> BenchConfig:
    """A validated :class:`BenchConfig`.

    Raises:
        BenchInputError: a bad preset, precision mode, pin list, or a batch/thread/stream/repeat
            count below 1 (checked once, by BenchConfig).
    """
    try:
        pre = Preset(preset)
        ovp = OvPrecision(ov_precision)
    except ValueError as e:
        raise BenchInputError(f"{e}; presets: {[p.value for p in Preset]}, "
                              f"ov precision: {[o.value for o in OvPrecision]}") from e
    if pin not in ("none", "auto") and not all(x.strip().isdigit() for x in pin.split(",")):
        raise BenchInputError(f"--pin must be none, auto or a comma list of CPU ids, got {pin!r}")
    return BenchConfig(preset=pre, batches=tuple(batches), threads=tuple(threads), streams=tuple(streams),
                       repeats=repeats, pin=pin, seed=seed, ov_precision=ovp,
                       max_accuracy_drop_pts=max_accuracy_drop, run_length=run_length,
                       engines=tuple(engines) if engines else None,
                       artifacts=tuple(artifacts) if artifacts else None,
                       input_shapes={k: tuple(v) for k, v in (input_shapes or {}).items()})


def environment() -> dict[str, Any]:
    env = fingerprint.host_fingerprint()
    env["engines"] = fingerprint.engine_versions()
    return env


def _filter_miss(source: Any, config: BenchConfig) -> str:
    """Which --engine / --artifact value matched nothing, and what the target has."""
    have_e = sorted({t.engine for t in source.targets})
    have_a = sorted(t.id for t in source.targets)
    bad = [f"--engine {e!r} (it has {', '.join(have_e)})" for e in config.engines or () if e not in have_e]
    bad += [f"--artifact {a!r} (it has {', '.join(have_a)})" for a in config.artifacts or () if a not in have_a]
    return "; ".join(bad) or f"no artifact matches both the --engine and --artifact filters (it has {', '.join(have_a)})"


def bench(target: str | os.PathLike, *, config: BenchConfig, out_dir: str | os.PathLike,
          engine: str | None = None, progress: TextIO | None = STDERR) -> dict[str, Any]:
    """Measure a build directory or one model file; return the result document.

    Raises:
        BenchInputError: the target cannot be read at all: no such build or file, an unreadable
            manifest, a corrupt model file (per-cell problems are in the result); or a cell
            found the model's inputs cannot be made from what was given (:func:`stop_reason`).
            No report is written then (a new ``out_dir`` is removed).
    """
    source = read_source(target, engine=engine)
    out = Path(out_dir)
    env = environment()
    cells = plan_cells(source, config, work_dir=out)
    if not cells:
        raise BenchInputError(f"{target}: nothing to measure: {_filter_miss(source, config)}")
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"edgeship bench: {len(cells)} cell(s) from {len(source.targets)} target(s), preset "
              f"{config.preset.value}, order seed {config.seed}; each cell in a fresh process", file=progress)
    def stop(res: dict[str, Any]) -> None:
        why = stop_reason(res, source)
        if why:
            raise BenchInputError(f"{source.path}: {why}")

    try:
        trial_results = runner.run_all(cells, work_dir=out, progress=progress, timeout_s=config.cell_timeout_s,
                                       on_result=stop)
    except BenchInputError:
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise
    targets = {t.id: t.to_json() for t in source.targets}
    grouped = result_mod.aggregate(trial_results, targets)
    return result_mod.new_result(
        source=_source_json(source), settings=config.to_json(), environment=env,
        targets=list(targets.values()), cells=grouped, order=[c.cell_id for c in cells],
        analysis=analysis.analyze(grouped, env, max_drop_pts=config.max_accuracy_drop_pts))


def stop_reason(res: dict[str, Any], source: Source) -> str | None:
    """Why a cell's error stops the whole run, else None (pure).

    The cell marks errors that no cell of the model can get past (``bad_input``: a dynamic dim
    without a size, an ``--input-shape`` that does not fit, a dynamic dim the model fails at).
    In a build, a model failing at the build's own validation sizes is that artifact's failure
    (a failed cell), not bad input.
    """
    err = res.get("error") or {}
    if res.get("status") != "error" or not err.get("bad_input"):
        return None
    if source.kind == "build" and err.get("type") == "DynamicDimError":
        return None
    return err.get("message") or err.get("type")


def _source_json(s: Source) -> dict[str, Any]:
    return {"kind": s.kind, "path": s.path, "model": s.model, "manifest_sha256": s.manifest_sha256,
            "validation_npz": s.validation_npz, "validation_random": s.validation_random, "skipped": list(s.skipped),
            "task": s.task, "task_recorded": s.task_recorded}


def bench_build(build_dir: str | os.PathLike, *, preset: Preset | str = Preset.QUICK,
                batches: Sequence[int] = (1,), threads: Sequence[int] = (1,), streams: Sequence[int] = (1,),
                out_dir: str | os.PathLike | None = None, repeats: int | None = None, seed: int = 0,
                ov_precision: OvPrecision | str = OvPrecision.DEPLOY, max_accuracy_drop: float | None = None,
                pin: str = "none", run_length: RunLength | None = None,
                progress: TextIO | None = STDERR) -> dict[str, Any]:
    """Benchmark every artifact of a build (``out_dir`` defaults to ``<build_dir>/bench``)."""
    cfg = make_config(preset=preset, batches=batches, threads=threads, streams=streams, repeats=repeats,
                      seed=seed, ov_precision=ov_precision, max_accuracy_drop=max_accuracy_drop, pin=pin,
                      run_length=run_length)
    return bench(build_dir, config=cfg, out_dir=out_dir or Path(build_dir) / "bench", progress=progress)


def write_reports(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``result.json``, ``report.md`` and ``report.html`` atomically; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "result.json", "markdown": out / "report.md", "html": out / "report.html"}
    result_mod.save(result, paths["json"])
    atomic_write_bytes(paths["markdown"], report_md.render(result).encode())
    atomic_write_bytes(paths["html"], report_html.render(result).encode())
    return paths


def exit_code(result: dict[str, Any]) -> int:
    """0 all cells measured, 3 some failed, 1 none measured."""
    st = [c["status"] for c in result["cells"]]
    if all(s == "ok" for s in st):
        return 0
    return 3 if any(s != "error" for s in st) else 1



#: shorter than the quick preset, for smoke runs of `make demo --quick` (figures are indicative only)
SMOKE_LENGTH = RunLength(warmup_min_iters=5, warmup_min_s=0.3, min_iters=64, min_duration_s=1.0,
                         max_duration_s=20.0)


def report_builds(build_dirs: Sequence[str | os.PathLike], *, smoke: bool = False, threads: Sequence[int] = (1,),
                  max_accuracy_drop: float | None = 1.0, stdout: TextIO = STDOUT,
                  progress: TextIO | None = STDERR) -> list[dict[str, Any]]:
    """For ``make demo``: bench each build, write its reports to ``<build>/bench``, print the tables
    and the recommendation. Returns the results. A build that cannot be read is reported and skipped."""
    results = []
    for b in build_dirs:
        try:
            res = bench_build(b, threads=threads, max_accuracy_drop=max_accuracy_drop,
                              run_length=SMOKE_LENGTH if smoke else None, progress=progress)
        except BenchInputError as e:
            print(f"bench: skipping {b}: {e}", file=stdout)
            continue
        paths = write_reports(res, Path(b) / "bench")
        print(f"\n=== edgeship bench {b} ===\n", file=stdout)
        print(report_md.tables(res), file=stdout)
        print(report_md.recommendation(res), file=stdout)
        print(f"\nreport: {paths['html']}", file=stdout)
        results.append(res)
    return results
