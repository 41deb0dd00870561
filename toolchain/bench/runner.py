"""Run planned cells, each in a fresh ``python -m runtime.bench.cell`` process.

A cell that fails (bad input, engine missing, crash, timeout) yields an error result naming
the cause; the other cells still run. Progress goes to stderr (or a given stream).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from runtime.fsutil import atomic_write_json

from runtime.bench.spec import CellSpec

from toolchain.console import STDERR

_ROOT = Path(__file__).resolve().parents[2]  # repo root holding runtime/ and toolchain/


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _timeout_s(cell) -> float:
    rl = cell.run_length
    return rl.cooldown_s + rl.warmup_min_s * 20 + rl.max_duration_s * 1.5 + 600.0


def run_one(cell: CellSpec, *, work_dir: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """Run one cell in a child process and return its result dict (ok or error)."""
    cells_dir = Path(os.path.abspath(work_dir)) / "cells"  # the cell process runs in _ROOT, not here
    cells_dir.mkdir(parents=True, exist_ok=True)
    spec_path = cells_dir / f"{cell.cell_id}.spec.json"
    out_path = cells_dir / f"{cell.cell_id}.result.json"
    atomic_write_json(spec_path, cell.to_json())
    if out_path.exists():
        out_path.unlink()
    cmd = [sys.executable, "-m", "runtime.bench.cell", str(spec_path), str(out_path)]
    try:
        proc = subprocess.run(cmd, env=_env(), cwd=str(_ROOT), capture_output=True, text=True,
                              timeout=timeout_s or _timeout_s(cell))
    except subprocess.TimeoutExpired:
        return _failed(cell, "Timeout", f"cell process exceeded {timeout_s or _timeout_s(cell):.0f} s")
    if out_path.exists():
        try:
            res = json.loads(out_path.read_text())
        except ValueError as e:
            return _failed(cell, "CorruptCellResult", f"{out_path}: {e}")
        res.setdefault("meta", cell.meta)
        res["exit_code"] = proc.returncode
        return res
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}")
    tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
    return _failed(cell, "CellProcessDied", f"cell process died ({how}) without a result: {tail}")


def _failed(cell, kind: str, message: str) -> dict[str, Any]:
    return {"cell_id": cell.cell_id, "status": "error", "meta": cell.meta,
            "error": {"type": kind, "phase": "process", "message": message}}


def run_all(cells: Sequence[CellSpec], *, work_dir: Path, progress: TextIO | None = STDERR,
            timeout_s: float | None = None,
            on_result: Callable[[dict[str, Any]], None] | None = None) -> list[tuple[CellSpec, dict[str, Any]]]:
    """Run ``cells`` in the given (already shuffled) order; return (spec, result) in that order."""
    results = []
    n = len(cells)
    t_all = time.monotonic()
    for i, cell in enumerate(cells, 1):
        label = (f"{cell.meta['artifact_id']} b{cell.batch} t{cell.threads} s{cell.streams}"
                 + (f" hint={cell.precision_hint}" if cell.precision_hint else "")
                 + (f" trial {cell.trial + 1}" if cell.trial else ""))
        if progress:
            print(f"[{i}/{n}] {label} ...", file=progress, end=" ", flush=True)
        t0 = time.monotonic()
        res = run_one(cell, work_dir=work_dir, timeout_s=timeout_s)
        results.append((cell, res))
        if progress:
            print(_progress_tail(res, time.monotonic() - t0), file=progress, flush=True)
        if on_result:
            on_result(res)
    if progress:
        bad = sum(r["status"] != "ok" for _, r in results)
        print(f"measured {n - bad}/{n} cells in {time.monotonic() - t_all:.1f} s"
              + (f"; {bad} failed" if bad else ""), file=progress, flush=True)
    return results


def _progress_tail(res: dict[str, Any], dt: float) -> str:
    if res["status"] != "ok":
        return f"FAILED ({res['error']['type']}: {res['error']['message'][:200]})"
    st = res["stats"]
    p50 = st["percentiles_s"].get("p50")
    lat = f"p50 {p50 * 1e3:.4g} ms" if p50 is not None else f"mean {st['mean_s'] * 1e3:.4g} ms"
    return (f"{lat}, n={st['count']}, {st['throughput_per_s']:.1f}/s, "
            f"exec {res.get('executed_precision')} ({dt:.1f} s)")
