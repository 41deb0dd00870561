"""On-device profiling for ``cmd/profile`` (``edgeship fleet profile``): the same measuring loop
as ``edgeship bench`` (``python -m runtime.bench.cell``: a fresh process per cell, warm-up,
the run-length minima, sample sufficiency, the fingerprint), run on a model in the store.

Serving never stops: each cell is its own process next to the agent, which keeps answering
requests (the result records how many it answered meanwhile, since they share the CPU).
:func:`plan` decides, from values, whether to run at all and refuses, naming why: an update
is running, another profile is running, the model is not on the device, the request is
malformed, or the memory available is short of what a cell process needs. :func:`run`
measures and returns the device's result document, which travels back over MQTT in chunks
(``runtime.contracts.mqtt.telemetry.profile_chunks``) and becomes a bench result on the host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bench.spec import CellSpec, Preset, RunLength
from runtime.spec import deploy_precision_hint

from .errors import DeviceAgentError

#: a cell process needs about this much on top of the model (python, numpy, the engine)
CELL_BASE_BYTES = 96 << 20
#: ... plus this many times the model's file size (weights, the engine's copy, arenas)
CELL_MODEL_FACTOR = 3
MAX_THREADS = 64
RESULT_KIND = "edgeship-device-profile"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ProfileRefused(DeviceAgentError):
    """The device will not profile now; ``reason_code`` says why (sent back as the answer;
    the command handler answers it, never lets it out)."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code, self.detail = reason_code, detail


@dataclass(frozen=True)
class Job:
    profile_id: str
    sha256: str
    ref: dict
    artifact_id: str
    model_path: str
    engine: str
    precision: str
    size_bytes: int
    threads: tuple[int, ...]
    run_length: RunLength
    preset: str


def mem_available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def plan(store: Any, body: dict, *, busy: str | None, available_bytes: int | None) -> Job:
    """The job ``body`` asks for. ``busy``: why the device is busy (an update, a profile), or None.

    Raises:
        ProfileRefused: busy, a malformed request, a model not in the store, or memory short.
    """
    if busy:
        raise ProfileRefused("busy.updating" if "update" in busy else "busy.profiling", busy)
    pid = body.get("profile_id")
    if not isinstance(pid, str) or not _ID.match(pid):
        raise ProfileRefused("profile.bad_request", f"profile_id {pid!r} must match {_ID.pattern}")
    threads = body.get("threads", [1])
    if (not isinstance(threads, list) or not threads or len(threads) > 8
            or not all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= MAX_THREADS for t in threads)):
        raise ProfileRefused("profile.bad_request", f"threads {threads!r} must be 1-8 integers in 1..{MAX_THREADS}")
    try:
        preset = Preset(body.get("preset", "quick"))
        rl = preset.run_length()
        if body.get("run_length") is not None:
            rl = RunLength.from_json({**rl.to_json(), **dict(body["run_length"])})
    except (ValueError, TypeError) as e:
        raise ProfileRefused("profile.bad_request", f"preset/run_length: {e}") from e
    sha = _find(store, body)
    info = store.info(sha)
    size = sum(f.bytes for f in info.files if f.path.startswith("model/"))
    need = CELL_BASE_BYTES + CELL_MODEL_FACTOR * size
    if available_bytes is not None and available_bytes < need:
        raise ProfileRefused("profile.memory_short", f"{available_bytes >> 20} MiB available, a cell process of "
                             f"{info.name} needs about {need >> 20} MiB; serving is left alone")
    return Job(profile_id=pid, sha256=sha, ref=store.ref(sha).to_json(), artifact_id=info.source.artifact_id,
               model_path=str(store.model_dir(sha) / info.model_path), engine=info.engine.value,
               precision=info.precision.value, size_bytes=size, threads=tuple(dict.fromkeys(threads)),
               run_length=rl, preset=preset.value)


def _find(store: Any, body: dict) -> str:
    sha, model = body.get("sha256"), body.get("model")
    refs = store.models()
    if isinstance(sha, str):
        if any(r.sha256 == sha for r in refs):
            return sha
        raise ProfileRefused("profile.model_not_found", f"bundle {sha[:12]} is not on this device (the device gets "
                             "models only through signed updates: push it first)")
    if isinstance(model, str):
        active = store.active()
        if active is not None and active.name == model:
            return active.sha256
        named = sorted((r for r in refs if r.name == model), key=lambda r: r.release)
        if named:
            return named[-1].sha256
        raise ProfileRefused("profile.model_not_found", f"model {model!r} is not on this device "
                             f"(it has {sorted({r.name for r in refs}) or 'none'})")
    active = store.active()
    if active is None:
        raise ProfileRefused("profile.model_not_found", "no model named and none is active")
    return active.sha256


def run(job: Job, *, requests_served=lambda: 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Measure every thread count of ``job`` in a fresh cell process each; the result document."""
    from runtime.bench import fingerprint

    cells = []
    with tempfile.TemporaryDirectory(prefix="edgeship-profile-") as work:
        for th in job.threads:
            before = requests_served()
            t0 = time.monotonic()
            res = _cell(job, th, Path(work), env)
            res["serving_during"] = {"requests": requests_served() - before, "seconds": time.monotonic() - t0}
            cells.append(res)
    env_fp = fingerprint.host_fingerprint()
    env_fp["engines"] = fingerprint.engine_versions()
    return {"kind": RESULT_KIND, "version": 1, "profile_id": job.profile_id, "model": job.ref,
            "target": {"id": job.artifact_id, "engine": job.engine, "precision": job.precision,
                       "model_path": job.model_path, "size_bytes": job.size_bytes, "status": "ok",
                       "accuracy": {}, "sha256": job.sha256},
            "settings": {"preset": job.preset, "threads": list(job.threads), "run_length": job.run_length.to_json()},
            "environment": env_fp, "cells": cells}


def _cell(job: Job, threads: int, work: Path, env: dict[str, str] | None) -> dict[str, Any]:
    key = f"{job.artifact_id}__b1_t{threads}_s1"
    cid = f"{key}_r0"
    meta = {"key": key, "artifact_id": job.artifact_id, "precision": job.precision, "engine": job.engine,
            "batch": 1, "threads": threads, "streams": 1, "precision_hint": None, "trial": 0}
    spec = CellSpec(cell_id=cid, model_path=job.model_path, engine=job.engine, threads=threads, batch=1,
                    run_length=job.run_length, precision_hint=deploy_precision_hint(job.engine, job.precision),
                    samples_path=str(work / f"{cid}.npy"), meta=meta)
    spec_path, out_path = work / f"{cid}.spec.json", work / f"{cid}.result.json"
    spec_path.write_text(json.dumps(spec.to_json()))
    rl = job.run_length
    timeout = rl.cooldown_s + rl.warmup_min_s * 20 + rl.max_duration_s * 1.5 + 600
    try:
        proc = subprocess.run([sys.executable, "-m", "runtime.bench.cell", str(spec_path), str(out_path)],
                              env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _failed(cid, meta, "Timeout", f"cell process exceeded {timeout:.0f} s")
    if not out_path.exists():
        return _failed(cid, meta, "CellProcessDied", f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    res = json.loads(out_path.read_text())
    res["exit_code"] = proc.returncode
    sf = res.get("samples_file")
    if sf:  # the host cannot read the device's files: the raw samples travel inline
        res["samples_s"] = np.load(sf["path"], allow_pickle=False).tolist()
    return res


def _failed(cid: str, meta: dict, kind: str, message: str) -> dict[str, Any]:
    return {"cell_id": cid, "status": "error", "meta": meta, "error": {"type": kind, "phase": "process",
                                                                        "message": message}}
