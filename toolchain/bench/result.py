"""The bench result document (schema_version 1): assemble, validate, save, load.

One *cell* in the result is one configuration of one target (artifact x batch x threads x
streams x OpenVINO hint). Its ``trials`` are the independent fresh-process runs; its
headline ``stats`` are computed over the pooled raw samples of all ok trials (no trimming),
and ``trial_p50_s`` shows the spread between processes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.bench.spec import CellSpec
from runtime.bench.stats import summarize
from runtime.fsutil import atomic_write_json

from .errors import ResultFormatError

SCHEMA_VERSION = 1
KIND = "edgeship-bench-result"

_REQUIRED_TOP = {"schema_version": int, "kind": str, "created_utc": str, "source": dict, "settings": dict,
                 "environment": dict, "targets": list, "cells": list, "order": list, "analysis": dict}
_REQUIRED_CELL = {"key": str, "artifact_id": str, "engine": str, "precision": str, "scenario": str,
                  "batch": int, "threads": int, "streams": int, "status": str, "trials": list}


def _samples(res: dict[str, Any]) -> np.ndarray | None:
    f = res.get("samples_file")
    if not f:
        return None
    try:
        return np.load(f["path"], allow_pickle=False)
    except (OSError, ValueError):
        return None


def aggregate(results: Sequence[tuple[CellSpec, dict[str, Any]]],
              targets: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Group per-trial (spec, result) pairs by configuration key into result cells."""
    groups: dict[str, list[tuple[CellSpec, dict[str, Any]]]] = {}
    for spec, r in results:
        groups.setdefault(spec.meta["key"], []).append((spec, r))
    cells = []
    for key in sorted(groups):
        trials = sorted(groups[key], key=lambda sr: sr[0].trial)
        cells.append(_group(key, trials, targets.get(trials[0][0].meta["artifact_id"], {})))
    return cells


def _group(key: str, pairs: list[tuple[CellSpec, dict[str, Any]]], target: dict[str, Any]) -> dict[str, Any]:
    spec = pairs[0][0]  # the configuration: validated once, when the bench was planned
    trials = [r for _, r in pairs]
    ok = [t for t in trials if t["status"] == "ok"]
    cell: dict[str, Any] = {
        "key": key, "artifact_id": spec.meta["artifact_id"], "engine": spec.engine, "precision": spec.meta["precision"],
        "scenario": spec.scenario.value, "batch": spec.batch, "threads": spec.threads, "streams": spec.streams,
        "precision_hint": spec.precision_hint, "device": spec.device,
        "size_bytes": target.get("size_bytes"), "accuracy": target.get("accuracy") or {},
        "fidelity": target.get("fidelity"), "artifact_status": target.get("status", "ok"),
        "gate_failed": bool(target.get("gate_failed")),
        "status": "ok" if len(ok) == len(trials) else ("partial" if ok else "error"),
        "errors": [t["error"] for t in trials if t["status"] != "ok"],
        "trials": [_trial_view(t) for t in trials],
    }
    if not ok:
        cell["stats"] = None
        return cell
    pooled = [s for s in (_samples(t) for t in ok) if s is not None]
    if len(pooled) == len(ok):
        samples = np.concatenate(pooled)
        wall = sum(t["stats"]["duration_s"] for t in ok)
        stats = summarize(samples, wall_s=wall, items_per_call=spec.batch).to_json()
        if spec.streams > 1:  # throughput under concurrency is per phase wall time, summed over trials
            stats["throughput_per_s"] = float(np.median([t["stats"]["throughput_per_s"] for t in ok]))
    else:
        stats = ok[0]["stats"]  # samples unavailable: fall back to the first trial's summary
    cell.update({
        "stats": stats,
        "trial_p50_s": [t["stats"]["percentiles_s"].get("p50") for t in ok],
        "executed_precision": ok[0].get("executed_precision"),
        "engine_version": ok[0].get("engine_version"),
        "pinned": ok[0].get("pinned"), "cpu_affinity": ok[0].get("cpu_affinity"),
        "inputs": {k: v for k, v in ok[0].get("inputs", {}).items() if k != "io"},
        "load_s": float(np.median([t["load_s"] for t in ok])),
        "first_inference_s": float(np.median([t["first_inference_s"] for t in ok])),
        "peak_rss_bytes": max((t["memory"].get("peak_rss_bytes") or 0) for t in ok) or None,
        "length_met": all(t.get("length_met") for t in ok),
        "samples_files": [t["samples_file"]["path"] for t in ok if t.get("samples_file")],
        "load_avg_max": _max_load(ok),
    })
    return cell


def _max_load(trials: list[dict[str, Any]]) -> float | None:
    """Highest 1-minute load average seen before or after any trial of the cell."""
    loads = [t[k][0] for t in trials for k in ("load_avg_before", "load_avg_after") if t.get(k)]
    return max(loads) if loads else None


def _trial_view(t: dict[str, Any]) -> dict[str, Any]:
    if t["status"] != "ok":
        return {"cell_id": t.get("cell_id"), "status": t["status"], "error": t["error"]}
    keep = ("cell_id", "status", "load_s", "engine_load_s", "first_inference_s", "warmup", "length_met",
            "drift", "memory", "load_avg_before", "load_avg_after", "pid", "cpu_affinity", "samples_file")
    v = {k: t.get(k) for k in keep}
    st = t["stats"]
    v["stats"] = {k: st[k] for k in ("count", "duration_s", "mean_s", "cv", "percentiles_s", "throughput_per_s")}
    return v


def new_result(*, source: dict[str, Any], settings: dict[str, Any], environment: dict[str, Any],
               targets: list[dict[str, Any]], cells: list[dict[str, Any]], order: list[str],
               analysis: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("edgeship")
    except PackageNotFoundError:
        __version__ = None

    return {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "edgeship_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source, "settings": settings, "environment": environment, "targets": targets,
        "cells": cells, "order": order, "analysis": analysis,
        "method": {
            "timed_call": "runtime.Session.run on preloaded inputs, time.perf_counter_ns",
            "warmup": "until both warmup_min_iters and warmup_min_s; never counted",
            "measured": "until both min_iters and min_duration_s (max_duration_s cap -> length_met false)",
            "percentiles": "numpy linear interpolation over all samples; no outlier trimming",
            "sufficiency": "percentile reported only with >= min_samples (LoadGen rule, 99% confidence)",
            "ci": "order-statistic binomial confidence interval (95%) for p50/p90",
            "isolation": "every trial of every configuration in a fresh process; shuffled order",
        },
    }


def validate(doc: Any) -> dict[str, Any]:
    """Check a result document's shape and version.

    Raises:
        ResultFormatError: not a bench result, unknown schema version, or missing/mistyped keys.
    """
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ResultFormatError("not an edgeship bench result (kind != 'edgeship-bench-result')")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ResultFormatError(f"bench result schema_version {doc.get('schema_version')!r} is not supported "
                                f"(this edgeship reads {SCHEMA_VERSION})")
    _check_keys(doc, _REQUIRED_TOP, "result")
    for i, c in enumerate(doc["cells"]):
        _check_keys(c, _REQUIRED_CELL, f"cells[{i}]")
        if c["status"] in ("ok", "partial") and not isinstance(c.get("stats"), dict):
            raise ResultFormatError(f"cells[{i}] ({c['key']}): status {c['status']} without stats")
    return doc


def _check_keys(d: dict[str, Any], required: dict[str, Any], where: str) -> None:
    for k, typ in required.items():
        if k not in d:
            raise ResultFormatError(f"{where}: missing key {k!r}")
        if not isinstance(d[k], typ) or (typ is int and isinstance(d[k], bool)):
            raise ResultFormatError(f"{where}: key {k!r} has type {type(d[k]).__name__}")


def save(doc: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write_json(path, validate(doc))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Raises: ResultFormatError (unreadable or invalid)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ResultFormatError(f"{p}: cannot read bench result ({e})") from e
    try:
        return validate(doc)
    except ResultFormatError as e:
        raise ResultFormatError(f"{p}: {e}") from e
