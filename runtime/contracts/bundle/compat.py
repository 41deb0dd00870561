"""Can this device run a bundle? Architecture names, engine versions and the ONNX opset
that each onnxruntime release runs. Pure: the caller passes ``platform.machine()`` and the
installed engine versions (``runtime.engine_version``).
"""

from __future__ import annotations

from typing import Mapping

from .schema import Requirements, parse_version

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}
#: newest ONNX opset per onnxruntime minor version (onnxruntime.ai/docs/reference/compatibility)
ORT_MAX_OPSET = {(1, 14): 18, (1, 15): 19, (1, 16): 19, (1, 17): 20, (1, 18): 21, (1, 19): 21,
                 (1, 20): 21, (1, 21): 22, (1, 22): 23}


def normalize_arch(machine: str) -> str:
    """``platform.machine()`` spelled the way bundles name architectures."""
    m = machine.strip().lower()
    return _ARCH_ALIASES.get(m, m)


def onnxruntime_max_opset(version: str | None) -> int | None:
    """The newest ONNX opset an onnxruntime version runs (None when unknown or not installed).

    A release newer than the table runs at least the table's newest opset."""
    v = parse_version(version or "")
    if not v or len(v) < 2:
        return None
    key = (v[0], v[1])
    return ORT_MAX_OPSET.get(key) or (max(ORT_MAX_OPSET.values()) if key > max(ORT_MAX_OPSET) else None)


def compatibility_problems(req: Requirements, *, machine: str,
                           engine_versions: Mapping[str, str | None],
                           max_opset: int | None = None) -> list[str]:
    """Why a device cannot run a bundle (empty when it can). Pure: the caller passes
    ``platform.machine()`` and the installed engine versions (``runtime.engine_version``)."""
    problems = []
    arch = normalize_arch(machine)
    if arch not in req.arch:
        problems.append(f"arch {arch} is not one of {list(req.arch)}")
    have = engine_versions.get(req.engine.value)
    if have is None:
        problems.append(f"engine {req.engine.value} is not installed")
    else:
        hv, need = parse_version(have), parse_version(req.min_engine_version)
        if hv is None or need is None or _pad(hv) < _pad(need):
            problems.append(f"engine {req.engine.value} {have} is older than {req.min_engine_version}")
    if req.opset is not None and max_opset is not None and req.opset > max_opset:
        problems.append(f"ONNX opset {req.opset} is newer than this device supports ({max_opset})")
    return problems


def _pad(v: tuple[int, ...]) -> tuple[int, ...]:
    return v + (0,) * (4 - len(v))
