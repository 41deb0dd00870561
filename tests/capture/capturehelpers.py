"""Shared bits of the capture tests: a served model's description for the recorder, a capture
made on the host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.contracts.bundle.schema import TensorStats
from runtime.contracts.capture import fileformat as ff
from runtime.spec import TensorSpec

SHA = "b" * 64
REF = {"name": "tiny", "version": "1.0.0", "release": 1, "sha256": SHA, "engine": "onnxruntime", "precision": "fp32"}


@dataclass(frozen=True)
class ModelInfo:
    """The parts of a BundleInfo the recorder reads (inputs, baseline stats, bundle rules)."""

    inputs: tuple = (TensorSpec("x", "float32", ("batch", 4)),)
    outputs: tuple = (TensorSpec("y", "float32", ("batch", 3)),)
    input_stats: dict = field(default_factory=lambda: {"x": TensorStats(0.0, 1.0, -3.0, 3.0)})
    output_stats: dict = field(default_factory=dict)
    capture: Any = None


def lookup(info: ModelInfo | None = None):
    info = info or ModelInfo()
    return lambda sha: (dict(REF, sha256=sha), info)


def host_capture(i: int, device: str, *, n: int = 2, release: int = 1, labels: bool = True, x=None, y=None,
                 rule="s", input_name: str = "x") -> ff.Capture:
    """Capture number ``i`` of ``device`` (``n`` samples; random ``x`` of 4 values unless given;
    labels ``y``, or all ``i % 3``, when ``labels``), as a pull writes it."""
    x = np.random.default_rng(i).standard_normal((n, 4)).astype(np.float32) if x is None else x
    logits = np.zeros((n, 3), np.float32)
    logits[np.arange(n), i % 3] = 5.0
    meta = ff.CaptureMeta(id=f"{1_700_000_000_000 + i}-{i:04x}", ts_ms=1_700_000_000_000 + i * 1000, fleet="lab",
                          device=device, model={"name": "tiny", "version": f"1.{release}.0", "release": release,
                                                "sha256": "c" * 64}, rule=rule, trigger="sample", rules=(rule,),
                          samples=n, inputs=(input_name,), outputs=("y",), labels=labels, layout="batch")
    label_arr = (np.full(n, i % 3, np.int64) if y is None else np.asarray(y, np.int64)) if labels else None
    return ff.Capture(meta=meta, inputs={input_name: x}, outputs={"y": logits}, labels=label_arr)


def device_ids(capdir) -> set[str]:
    """The captures a store's index lists (what the device holds; no index yet: none)."""
    from runtime.contracts.capture import fileformat as ff

    try:
        return {e.meta.id for e in ff.read_index(capdir).entries}
    except ff.CaptureFormatError:
        return set()


def segment_records(root) -> tuple[int, int]:
    """``(live, erased)`` records in the segments of a store; every erased payload is zeros."""
    import os

    from runtime.contracts.capture import segments

    live = erased = 0
    for p in sorted(root.glob("*.seg")):
        with open(p, "rb") as f:
            records, end = segments.scan(f, os.path.getsize(p))
            assert end == os.path.getsize(p), f"{p}: bytes after the last record"
            for r in records:
                f.seek(r.offset)
                if r.erased:
                    assert not any(f.read(r.length)), f"{p}@{r.offset}: an erased capture's bytes are still there"
                    erased += 1
                else:
                    live += 1
    return live, erased


def recorder(tmp_path, *rules, info=None, redact=None, start=True, **section):
    """A recorder on ``tmp_path/cap`` with these rules (seeded coins; index written at once)."""
    import random

    from device_agent.capture.config import CaptureSection
    from device_agent.capture.recorder import CaptureRecorder
    from device_agent.capture.store import CaptureStore

    sec = CaptureSection(enabled=True, rules=tuple(rules), **section)
    store = CaptureStore(tmp_path / "cap", disk_budget_bytes=sec.disk_budget_bytes, index_interval_s=0.0)
    rec = CaptureRecorder(sec, store, model_lookup=lookup(info), fleet="f", device="dev1", redact=redact,
                          rng=random.Random(7).random)
    return rec.start() if start else rec
