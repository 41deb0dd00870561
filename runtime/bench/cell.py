"""Measure one cell in this process: ``python -m runtime.bench.cell SPEC.json OUT.json``.

The toolchain runs every cell in a fresh process through this entry point, so no cell
inherits another's warm caches, thread pools or allocator state. It imports only
``runtime``, numpy and the stdlib (never torch or the toolchain), so a device can run it.

Order inside the process: pin CPUs (if asked) -> load inputs -> open the model (timed:
engine import + load/compile) -> first inference (cold, timed alone) -> warm-up -> measured
phase -> write raw samples (.npy) and the result JSON (atomically).

Exit codes: 0 measured; 3 this cell has bad input (the result JSON says why); 1 unexpected.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeshipRuntimeError
from ..fsutil import atomic_write_bytes, atomic_write_json, sha256_file
from . import fingerprint, inputs, loop
from .errors import BenchError, CellSpecError, ModelInputError
from .spec import CellSpec
from .stats import drift, summarize

RESULT_VERSION = 1


def _peak(*readings: dict[str, int]) -> int | None:
    """Peak RSS: VmHWM, but never below an RSS we saw (the kernel's per-CPU RSS counters make
    VmHWM and an earlier VmRSS disagree by a few hundred KB)."""
    vals = [r[k] for r in readings for k in ("VmHWM", "VmRSS") if r.get(k) is not None]
    return max(vals) if vals else None


def _proc_status() -> dict[str, int]:
    """VmRSS / VmHWM (peak) of this process in bytes, from /proc (Linux)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) * 1024
    except OSError:
        import resource  # fallback: peak only (KiB on Linux)

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def _error_result(spec: CellSpec | None, exc: BaseException, phase: str) -> dict[str, Any]:
    return {
        "result_version": RESULT_VERSION,
        "cell_id": spec.cell_id if spec else None,
        "status": "error",
        # bad_input: no cell of this model can run with these inputs (the toolchain stops, exit 2)
        "error": {"type": type(exc).__name__, "phase": phase, "message": str(exc),
                  "bad_input": isinstance(exc, ModelInputError)},
        "meta": spec.meta if spec else {},
    }


def _pin(spec: CellSpec) -> list[int] | None:
    if spec.cpu_affinity is not None:
        try:
            os.sched_setaffinity(0, set(spec.cpu_affinity))
        except (OSError, AttributeError, ValueError) as e:
            raise CellSpecError(f"cannot pin to CPUs {list(spec.cpu_affinity)}: {e}") from e
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _batched_shape(stored: tuple[int, ...], axis: int | None, batch: int) -> list[int]:
    """The fed shape of an input stored without its batch axis (``state [2, 128]`` at axis 1 -> [2, B, 128])."""
    dims = list(stored)
    if axis is not None:
        dims.insert(axis, batch)
    return dims


def _sample_arrays(spec: CellSpec, session) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    axes = inputs.resolve_batch_axes(session.inputs, spec.batch_axes)
    if spec.inputs_npz:
        arrays = inputs.load_validation(spec.inputs_npz, session.inputs, spec.batch_axes)
        src = {"source": "validation", "file": spec.inputs_npz,
               "samples": int(min(len(v) for v in arrays.values()))}
    else:
        arrays = inputs.random_sample_arrays(session.inputs, count=max(spec.input_pool * spec.batch, 1),
                                             seed=spec.input_seed, batch_axes=spec.batch_axes,
                                             shapes=spec.input_shapes)
        src = {"source": "random", "seed": spec.input_seed,
               "distribution": "standard normal (float); 0/1 (int16+); full range ((u)int8)",
               "shapes": {k: _batched_shape(v.shape[1:], axes[k], spec.batch) for k, v in arrays.items()}}
    return arrays, src


def run_cell(spec: CellSpec) -> dict[str, Any]:
    """Measure ``spec`` in this process and return the cell result (JSON-ready).

    Raises:
        BenchError / EdgeshipRuntimeError / ValueError: bad input for this cell.
    """
    import runtime

    if spec.run_length.cooldown_s:
        time.sleep(spec.run_length.cooldown_s)
    affinity = _pin(spec)
    load_before = fingerprint.load_avg()
    rss0 = _proc_status()
    t0 = time.perf_counter()
    session = runtime.open_model(spec.model_path, engine=spec.engine, threads=spec.threads,
                                 device=spec.device, precision_hint=spec.precision_hint)
    load_s = time.perf_counter() - t0
    try:
        inputs.check_batch(session.inputs, spec.batch, spec.batch_axes)
        inputs.check_input_shapes(session.inputs, spec.input_shapes)
        arrays, input_info = _sample_arrays(spec, session)
        pool = inputs.feed_pool(arrays, session.inputs, batch=spec.batch, pool=spec.input_pool,
                                batch_axes=spec.batch_axes)
        del arrays
        rss_loaded = _proc_status()
        try:
            first_s = loop.time_first_call(session.run, pool[0])
        except Exception as e:  # a dynamic dim that breaks at this size is named, not a traceback
            err = inputs.explain_failure(e, pool[0], session.inputs)
            if err is e:
                raise
            raise err from e
        if spec.streams == 1:
            m = loop.single_stream(session.run, pool, spec.run_length)
        else:
            m = loop.multi_stream(session.run, pool, spec.run_length, streams=spec.streams)
        rss_end = _proc_status()
        desc = session.describe()
    finally:
        session.close()
    summary = summarize(m.samples_s, wall_s=m.wall_s, items_per_call=spec.batch)
    return {
        "result_version": RESULT_VERSION, "cell_id": spec.cell_id, "status": "ok", "error": None,
        "meta": spec.meta, "scenario": spec.scenario.value,
        "engine": desc["engine"], "engine_version": desc["engine_version"],
        "executed_precision": desc["executed_precision"], "precision_hint": spec.precision_hint,
        "threads": spec.threads, "batch": spec.batch, "streams": spec.streams,
        "cpu_affinity": affinity, "pinned": spec.cpu_affinity is not None,
        "inputs": input_info | {"pool": len(pool), "io": desc["inputs"]},
        "timed_call": "runtime.Session.run (caller-level arrays)",
        "load_s": load_s, "engine_load_s": getattr(session, "load_time_s", None),
        "first_inference_s": first_s,
        "warmup": {"iters": m.warmup_iters, "duration_s": m.warmup_s},
        "length_met": m.length_met, "stats": summary.to_json(), "drift": drift(m.samples_s),
        "samples_file": _write_samples(spec, m.samples_s),
        "memory": {"rss_before_load_bytes": rss0.get("VmRSS"), "rss_after_load_bytes": rss_loaded.get("VmRSS"),
                   "peak_rss_bytes": _peak(rss0, rss_loaded, rss_end)},
        "load_avg_before": load_before, "load_avg_after": fingerprint.load_avg(), "pid": os.getpid(),
    }


def _write_samples(spec: CellSpec, samples_s: list[float]) -> dict[str, Any] | None:
    if not spec.samples_path:
        return None
    atomic_write_bytes(spec.samples_path, _npy_bytes(np.asarray(samples_s, dtype=np.float64)))
    return {"path": spec.samples_path, "sha256": sha256_file(spec.samples_path),
            "format": "npy float64 seconds, in completion order"}


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, a, allow_pickle=False)
    return bio.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m runtime.bench.cell SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec_path, out_path = argv
    spec = None
    try:
        spec = CellSpec.from_json(json.loads(Path(spec_path).read_text()))
        result, code = run_cell(spec), 0
    except (BenchError, EdgeshipRuntimeError, ValueError, OSError) as e:
        result, code = _error_result(spec, e, "cell"), 3
    except Exception as e:  # noqa: BLE001 - reported in the result, not swallowed
        result = _error_result(spec, e, "cell")
        result["error"]["traceback"] = traceback.format_exc()
        code = 1
    atomic_write_json(out_path, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
