"""What the agent tells clients about its models: metadata, readiness, configuration and the
repository index, per version (pure functions of the store's refs and the loaded session).

One model is served at a time (the store's active one); the other versions of it in the
store (the previous model, a staged update) are known but not loaded: their metadata comes
from their model.json, their readiness is false, and the repository index lists them as
``UNAVAILABLE``. A version is named by its version string (``1.2.0``) or its release
number (``2``).

The model configuration follows Triton's ``ModelConfig`` (what ``tritonclient``'s
``get_model_config`` reads): ``max_batch_size`` is 0, so ``dims`` are the whole shape with
-1 for a dynamic dimension (the agent does not add an implicit batch dimension).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from runtime.spec import TensorSpec

from ..store import ModelRef
from .errors import V2Error
from .v2 import PLATFORM, tensor_metadata, v2_datatype, v2_shape

#: the protocol extensions this server implements (GET /v2 lists them)
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics",
              "model_repository_index"]


@dataclass(frozen=True)
class Version:
    """One stored version of a model; ``inputs``/``outputs`` from the session when loaded."""

    ref: ModelRef
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ready: bool


def matches(ref: ModelRef, version: str | None) -> bool:
    return version is None or version in (ref.version, str(ref.release))


def pick(versions: list[Version], name: str, version: str | None) -> Version:
    """The version the path names (None: the ready one, else the newest).

    Raises:
        V2Error(404): no such model or version in the store.
    """
    found = [v for v in versions if v.ref.name == name and matches(v.ref, version)]
    if not found:
        known = sorted({f"{v.ref.name} {v.ref.version}" for v in versions})
        raise V2Error(404, f"model {name!r}" + (f" version {version!r}" if version else "")
                      + f" is not served here; the store has {known or 'no models'}")
    ready = [v for v in found if v.ready]
    return ready[0] if ready else max(found, key=lambda v: v.ref.release)


def metadata(v: Version, all_versions: Iterable[Version]) -> dict[str, Any]:
    versions = [x.ref.version for x in sorted(all_versions, key=lambda x: (not x.ready, -x.ref.release))
                if x.ref.name == v.ref.name]
    return {"name": v.ref.name, "versions": versions, "platform": PLATFORM.get(v.ref.engine, v.ref.engine),
            "inputs": tensor_metadata(v.inputs), "outputs": tensor_metadata(v.outputs),
            "parameters": {"sha256": v.ref.sha256, "release": v.ref.release, "precision": v.ref.precision,
                           "version": v.ref.version, "ready": v.ready}}


def model_config(v: Version) -> dict[str, Any]:
    """Triton's ModelConfig as JSON (protobuf's JSON names, as Triton's HTTP API answers)."""
    return {
        "name": v.ref.name, "platform": PLATFORM.get(v.ref.engine, v.ref.engine), "backend": v.ref.engine,
        "version_policy": {"specific": {"versions": [str(v.ref.release)]}},
        "max_batch_size": 0,
        "input": [{"name": s.name, "data_type": triton_type(s.dtype), "dims": v2_shape(s)} for s in v.inputs],
        "output": [{"name": s.name, "data_type": triton_type(s.dtype), "dims": v2_shape(s)} for s in v.outputs],
        "parameters": {k: {"string_value": str(val)} for k, val in
                       (("sha256", v.ref.sha256), ("version", v.ref.version), ("precision", v.ref.precision))},
    }


def triton_type(dtype: str) -> str:
    """``float32`` -> ``TYPE_FP32``; BYTES is ``TYPE_STRING`` in Triton's model configuration."""
    dt = v2_datatype(dtype)
    return "TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}"


def repository_index(versions: Iterable[Version], *, ready_only: bool = False,
                     load_error: str | None = None) -> list[dict[str, Any]]:
    out = []
    for v in sorted(versions, key=lambda x: (x.ref.name, -x.ref.release)):
        if ready_only and not v.ready:
            continue
        reason = "" if v.ready else (load_error if load_error and load_error.startswith(v.ref.sha256[:12])
                                     else "in the store, not the active model")
        out.append({"name": v.ref.name, "version": v.ref.version,
                    "state": "READY" if v.ready else "UNAVAILABLE", "reason": reason})
    return out
