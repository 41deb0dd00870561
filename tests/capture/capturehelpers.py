"""Shared bits of the capture tests: a served model's description for the recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.contracts.bundle.schema import TensorStats
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
