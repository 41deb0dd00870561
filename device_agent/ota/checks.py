"""The gate's model checks: load the new model and test it (schema, device/precision,
golden set, latency). Both the gate's child process (:mod:`.gate_child`, which runs them
first, where a crash spares serving) and the gate itself (:mod:`.gate`, which loads the
model again in the serving process) import them.

The judging functions are pure (values in, problems out); :func:`load_and_check` is the
shell that loads the engine and times the calls.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from runtime.contracts.bundle import GOLDEN_NPZ, BundleInfo, compare_outputs, golden_calls
from runtime.spec import deploy_precision_hint, expected_execution

from .config import UpdateSection
from .errors import (
    GateError, GateFallbackError, GateInferenceError, GateLatencyError, GateLoadError, GateNaNError,
    GateSchemaError, GateToleranceError,
)


def schema_problems(session, info: BundleInfo) -> list[str]:
    probs = []
    for kind, got, want in (("input", session.inputs, info.inputs), ("output", session.outputs, info.outputs)):
        g = {s.name: s for s in got}
        for w in want:
            s = g.get(w.name)
            if s is None:
                probs.append(f"{kind} {w.name!r} missing (model has {sorted(g)})")
            elif s.dtype != w.dtype or len(s.shape) != len(w.shape) or any(
                    isinstance(a, int) and isinstance(b, int) and a >= 0 and b >= 0 and a != b
                    for a, b in zip(s.shape, w.shape)):
                probs.append(f"{kind} {w.name!r} is {s.dtype}{list(s.shape)}, model.json says {w.dtype}{list(w.shape)}")
    return probs


def fallback_problems(session, info: BundleInfo, *, device: str, allow_precision_change: bool) -> list[str]:
    probs = []
    if str(session.device).upper() != device.upper():
        probs.append(f"engine runs on {session.device}, not {device}")
    want = expected_execution(info.engine, info.precision.value)
    if not allow_precision_change and session.executed_precision not in want:
        probs.append(f"engine executes {session.executed_precision}, bundle is {info.precision.value}")
    return probs


def classify_golden(problems: list[str]) -> type[GateError]:
    if any("NaN or Inf" in p for p in problems):
        return GateNaNError
    if any("shape" in p or "missing" in p for p in problems):
        return GateSchemaError
    return GateToleranceError


# ------------------------------------------------------------------ shell
def load_and_check(*, model_dir: Path, info: BundleInfo, cfg: UpdateSection, threads: int | None,
                   golden: bool) -> tuple[float, float | None, object]:
    """Load the model and run the schema and fallback checks, and the golden set if ``golden``.

    Returns (load seconds, median golden latency ms or None, the open session).

    Raises:
        GateError: the failed check's subclass (the session is closed then).
    """
    import runtime

    t0 = time.perf_counter()
    try:
        session = runtime.open_model(model_dir / info.model_path, engine=info.engine,
                                     device=cfg.gate_device, threads=threads,
                                     precision_hint=deploy_precision_hint(info.engine, info.precision.value))
    except runtime.EdgeshipRuntimeError as e:
        raise GateLoadError(f"{info.name} r{info.release}: {e}") from e
    load_s = time.perf_counter() - t0
    try:
        probs = schema_problems(session, info)
        if probs:
            raise GateSchemaError(f"{info.name} r{info.release}: " + "; ".join(probs))
        probs = fallback_problems(session, info, device=cfg.gate_device,
                                  allow_precision_change=cfg.allow_precision_change)
        if probs:
            raise GateFallbackError(f"{info.name} r{info.release}: " + "; ".join(probs))
        median_ms = _golden(session, info, model_dir, cfg) if golden else None
        return load_s, median_ms, session
    except BaseException:
        session.close()
        raise


def _golden(session, info: BundleInfo, model_dir: Path, cfg: UpdateSection) -> float | None:
    import runtime

    with np.load(model_dir / GOLDEN_NPZ, allow_pickle=False) as z:
        calls = golden_calls({k: z[k] for k in z.files}, info)
    budget_ms = info.latency_budget_ms
    limit_ms = budget_ms * cfg.gate_latency_factor if budget_ms else None
    times = []
    for i, (feeds, expected) in enumerate(calls):
        t0 = time.perf_counter()
        try:
            got = session.run(feeds)
        except runtime.EdgeshipRuntimeError as e:
            raise GateInferenceError(f"{info.name} r{info.release}: golden call {i}: {e}") from e
        dt_ms = 1000 * (time.perf_counter() - t0)
        times.append(dt_ms)
        probs = compare_outputs(got, expected, info.tolerances)
        if probs:
            raise classify_golden(probs)(f"{info.name} r{info.release}: golden call {i}: " + "; ".join(probs))
        if limit_ms is not None and i == 0 and dt_ms > 20 * limit_ms:
            break  # hopeless: do not sit through the rest of a very slow model
    if not times:
        return None
    med = statistics.median(times[1:] if len(times) > 2 else times)  # first call warms caches
    if limit_ms is not None and med > limit_ms:
        raise GateLatencyError(f"{info.name} r{info.release}: median golden latency {med:.1f} ms > "
                               f"{cfg.gate_latency_factor:g} x budget {budget_ms:g} ms")
    return med
