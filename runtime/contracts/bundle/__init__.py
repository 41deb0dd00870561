"""The model bundle contract: ``model.json`` (:mod:`.schema`), the tar's members
(:mod:`.members`), the golden set (:mod:`.golden`) and device compatibility (:mod:`.compat`).

Everything here is pure except :func:`read_bundle_info`, which reads one bundle file.
"""

from __future__ import annotations

from ..errors import BundleError
from .compat import ORT_MAX_OPSET, compatibility_problems, normalize_arch, onnxruntime_max_opset
from .golden import compare_outputs, golden_calls
from .members import check_members, read_bundle_info
from .schema import (
    GOLDEN_NPZ, MAX_MODEL_JSON_BYTES, MODEL_DIR, MODEL_JSON, SCHEMA_VERSION, Arch, BundleInfo, FileEntry,
    Precision, Requirements, Source, TensorStats, Tolerances, check_member_name, parse_version, schema_version_for,
)

__all__ = [
    "BundleError", "BundleInfo", "FileEntry", "Requirements", "Tolerances", "TensorStats", "Source",
    "Precision", "Arch", "SCHEMA_VERSION", "MODEL_JSON", "GOLDEN_NPZ", "MODEL_DIR", "MAX_MODEL_JSON_BYTES",
    "check_member_name", "check_members", "read_bundle_info", "golden_calls", "compare_outputs",
    "parse_version", "schema_version_for", "normalize_arch", "compatibility_problems", "onnxruntime_max_opset",
    "ORT_MAX_OPSET",
]
