"""Can *this* device run a release? The I/O shell around the pure check of
``runtime.contracts.bundle.compat``: it reads the CPU architecture and the installed engine
versions, and the newest ONNX opset the installed onnxruntime runs.
"""

from __future__ import annotations

import platform
from typing import Any

from runtime import available_engines, engine_version
from runtime.contracts.bundle import BundleError, Requirements, compatibility_problems, onnxruntime_max_opset
from runtime.spec import Engine


def device_problems(requirements: Any, *, max_onnx_opset: int = 0) -> list[str]:
    """Why this device cannot run a release with these (signed, JSON) requirements; empty when it can.

    ``max_onnx_opset``: ``[update] max_onnx_opset`` (0 derives it from the installed onnxruntime).
    """
    try:
        req = Requirements.from_json(requirements, where="requirements")
    except BundleError as e:
        return [f"unreadable requirements: {e}"]
    versions = {e.value: engine_version(e) for e in available_engines()}
    opset = max_onnx_opset or onnxruntime_max_opset(engine_version(Engine.ONNXRUNTIME))
    return compatibility_problems(req, machine=platform.machine(), engine_versions=versions, max_opset=opset)
