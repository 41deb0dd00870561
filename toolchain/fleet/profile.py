"""`edgeship fleet profile`: measure a model on the device itself and read the result like a
local `edgeship bench` result.

The operator sends ``cmd/profile`` (a normal command: response topic, correlation data,
message expiry); the device answers at once (accepted, or refused naming why), measures with
the bench's own cell loop, and sends the result in chunks on
``telemetry/profile/{profile_id}``, which this side verifies complete (every index, the
sha256 of the whole) before it turns the device's cells into a bench result document
(``toolchain.bench.result``: same schema, cell keys ``<artifact_id>__b1_t<N>_s1`` as a desk
run of the build, so ``edgeship bench compare desk.json device.json`` compares them).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.telemetry import ProfileAssembly
from runtime.contracts.mqtt.topics import device_topics
from runtime.fsutil import atomic_write_bytes, sha256_file

from .errors import FleetError


class ProfileRefusedError(FleetError):
    """The device refused to profile (busy, model not there, memory short); exit code 1."""


def request_profile(fc: Any, *, fleet: str, device: str, body: dict, timeout_s: float,
                    progress=None) -> tuple[dict, dict]:
    """Send ``cmd/profile`` and collect the chunked result. Returns (the device's answer, its result).

    Raises:
        ProfileRefusedError: the device refused.
        FleetError: no answer, or the result did not arrive complete and intact within ``timeout_s``.
    """
    pid = body.setdefault("profile_id", f"p-{uuid.uuid4().hex[:12]}")
    t = device_topics(fleet=fleet, device=device, prefix=fc.settings.prefix)
    chunk_topic = f"{t.base}/telemetry/profile/{pid}"
    fc.subscribe(chunk_topic)
    answer = fc.command(fleet, device, "profile", body, timeout_s=min(timeout_s, 30.0))
    if not answer.get("ok"):
        raise ProfileRefusedError(f"{fleet}/{device} refused to profile: {answer.get('detail')} "
                                  f"[{answer.get('reason_code')}]")
    if progress:
        print(f"{device}: {answer.get('detail')}", file=progress, flush=True)
    asm = ProfileAssembly(pid)
    for msg in fc.messages(timeout_s=timeout_s):
        if msg.topic != chunk_topic:
            continue
        try:
            if asm.add(msg.json() or {}):
                return answer, asm.result()
        except PayloadRejected as e:
            raise FleetError(f"profile {pid} from {fleet}/{device}: {e}") from e
    missing = asm.missing
    raise FleetError(f"profile {pid} from {fleet}/{device}: the result did not arrive within {timeout_s:.0f} s"
                     + (f" (chunks {missing[:10]} of it missing)" if missing else " (no chunk yet)"))


def to_bench_result(doc: dict, *, out_dir: str | os.PathLike, fleet: str, device: str) -> dict[str, Any]:
    """The device's result as a bench result document; raw samples go to ``out_dir/samples``."""
    from ..bench import analysis, result as result_mod

    if doc.get("error"):
        raise FleetError(f"profile on {fleet}/{device} failed: {doc['error']}")
    out = Path(out_dir)
    trials = []
    for cell in doc.get("cells", []):
        cell = dict(cell)
        samples = cell.pop("samples_s", None)
        if cell.get("status") == "ok" and samples is not None:
            path = out / "samples" / f"{cell['cell_id']}.npy"
            atomic_write_bytes(path, _npy(np.asarray(samples, dtype=np.float64)))
            cell["samples_file"] = {"path": os.path.abspath(path), "sha256": sha256_file(path),
                                    "format": "npy float64 seconds, in completion order (measured on the device)"}
        trials.append(cell)
    target = doc["target"]
    env = dict(doc.get("environment") or {})
    env["measured_on"] = f"device {fleet}/{device} (edgeship fleet profile)"
    cells = result_mod.aggregate([(_spec(c, doc, fleet, device), c) for c in trials], {target["id"]: target})
    st = doc.get("settings") or {}
    settings = {"preset": st.get("preset"), "batches": [1], "threads": st.get("threads"), "streams": [1],
                "repeats": 1, "pin": "none", "seed": 0, "ov_precision": "deploy", "max_accuracy_drop_pts": None,
                "run_length": st.get("run_length"), "input_pool": 16, "engines": None, "artifacts": [target["id"]]}
    model = doc.get("model") or {}
    source = {"kind": "device_profile", "path": f"{fleet}/{device}", "model": {"name": model.get("name"),
              "release": model.get("release"), "version": model.get("version"), "sha256": model.get("sha256")},
              "manifest_sha256": None, "validation_npz": None, "validation_random": True, "skipped": []}
    return result_mod.new_result(source=source, settings=settings, environment=env, targets=[target], cells=cells,
                                 order=[c.get("cell_id") for c in trials],
                                 analysis=analysis.analyze(cells, env, max_drop_pts=None))


def _spec(cell: dict, doc: dict, fleet: str, device: str):
    """The configuration a device cell ran with, from what it echoed (``meta``) and the document's
    settings: the bench's aggregation reads a cell's configuration from its spec.

    Raises:
        FleetError: the cell does not say its configuration (the result is not a profile's).
    """
    from runtime.bench.errors import BenchError
    from runtime.bench.spec import CellSpec, RunLength

    m, target = cell.get("meta") or {}, doc["target"]
    try:
        return CellSpec(cell_id=cell.get("cell_id") or f"{m['key']}_r0", model_path=str(target.get("model_path", "")),
                        engine=str(m.get("engine", target["engine"])), threads=int(m["threads"]),
                        batch=int(m.get("batch", 1)), streams=int(m.get("streams", 1)),
                        run_length=RunLength.from_json((doc.get("settings") or {})["run_length"]),
                        precision_hint=m.get("precision_hint"), trial=int(m.get("trial", 0)), meta=m)
    except (KeyError, TypeError, ValueError, BenchError) as e:
        raise FleetError(f"profile from {fleet}/{device}: cell {cell.get('cell_id')!r} does not say its "
                         f"configuration ({type(e).__name__}: {e})") from e


def _npy(a: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, a, allow_pickle=False)
    return bio.getvalue()
