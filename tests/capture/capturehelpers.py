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
