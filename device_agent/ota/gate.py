"""The gate before the switch: load the new model beside the old one and test it.

Checks, in order (each failure is its own error and reason code):
memory (would it fit beside the old model? :func:`memory_plan` decides, per
``[update] memory_policy``, whether the updater unloads the old model first) -> load -> IO schema against model.json ->
device/precision actually used against what the bundle asked for -> the golden set
(NaN/Inf, shape, tolerances) -> median latency against the bundle's budget.
Everything after the memory check runs first in a child process (:mod:`.gate_child`;
a model that kills its process fails the update with ``gate.crashed`` while the caller
keeps serving), then the model is loaded in the caller and schema/fallback are re-checked.

The memory judges here are pure (values in, a plan or an error out); the model checks
are in :mod:`.checks`, shared with the child. :func:`run_gate` is the shell.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.contracts.bundle import BundleInfo

from ..logs import get_logger
from .checks import load_and_check
from .config import MemoryPolicy, UpdateSection
from .errors import GateMemoryError
from .gate_child import check_in_child

log = get_logger("update.gate")


@dataclass(frozen=True)
class GateReport:
    load_s: float
    golden_calls: int
    median_latency_ms: float | None
    executed_precision: str
    device: str
    estimated_bytes: int
    available_bytes: int
    child_s: float = 0.0  # wall time of the child process that ran the model first


class MemoryPlan(enum.Enum):
    FITS = "fits"                  # load the new model beside the old one
    UNLOAD_FIRST = "unload_first"  # unload the old model, then load the new one


# ------------------------------------------------------------------ pure judges
def model_file_bytes(info: BundleInfo) -> int:
    """Bytes of the model's files (what the engine loads) per model.json."""
    return sum(f.bytes for f in info.files if f.path.startswith("model/"))


def memory_plan(*, model_bytes: int, available_bytes: int, loaded_bytes: int, cfg: UpdateSection) -> MemoryPlan:
    """Whether the new model fits beside the loaded one, or must replace it first (policy).

    ``loaded_bytes``: file bytes of the model loaded now (0 when none is).

    Raises:
        GateMemoryError: it does not fit and the policy is ``refuse``, or it would not fit
            even with the loaded model unloaded.
    """
    est = int(model_bytes * cfg.memory_load_factor)
    need = est + cfg.memory_reserve_bytes
    if need <= available_bytes:
        return MemoryPlan.FITS
    if cfg.memory_policy is MemoryPolicy.UNLOAD_FIRST and loaded_bytes > 0:
        freed = int(loaded_bytes * cfg.memory_load_factor)
        if need <= available_bytes + freed:
            return MemoryPlan.UNLOAD_FIRST
        raise GateMemoryError(
            f"the new model needs about {est >> 20} MiB (+{cfg.memory_reserve_bytes >> 20} MiB reserve) but "
            f"{available_bytes >> 20} MiB are available and unloading the old model frees only about "
            f"{freed >> 20} MiB; refusing the update (free memory, or lower [update] memory_reserve_bytes)")
    raise _no_room(est, available_bytes, cfg)


def memory_decision(*, model_bytes: int, available_bytes: int, cfg: UpdateSection) -> int:
    """The estimated resident bytes of the new model.

    Raises:
        GateMemoryError: it does not fit in the memory available now.
    """
    est = int(model_bytes * cfg.memory_load_factor)
    if est + cfg.memory_reserve_bytes <= available_bytes:
        return est
    raise _no_room(est, available_bytes, cfg)


def _no_room(est: int, available_bytes: int, cfg: UpdateSection) -> GateMemoryError:
    return GateMemoryError(
        f"the new model needs about {est >> 20} MiB (+{cfg.memory_reserve_bytes >> 20} MiB reserve) but "
        f"{available_bytes >> 20} MiB are available beside the old model; refusing the update "
        f"(free memory, set [update] memory_policy = \"unload_first\", or lower [update] memory_reserve_bytes)"
    )


# ------------------------------------------------------------------ shell
def run_gate(*, model_dir: Path, info: BundleInfo, cfg: UpdateSection, threads: int | None = None,
             available_bytes: Callable[[], int] | None = None) -> tuple[GateReport, object]:
    """Run the gate on a staged model.

    The memory check runs here; the checks that execute the new model (load, schema,
    fallback, golden set, latency) run first in a child process (:mod:`.gate_child`), so a
    model that kills its process kills the child, not the caller. When the child passes,
    the model is loaded here and the cheap checks (schema, fallback) run again on that session.

    Returns the report and the open session (hand it to ``Agent.switch_to`` or close it).

    Raises:
        GateError: a subclass named for the failed check (memory, load, schema, fallback,
            NaN, tolerance, inference, latency, crashed).
    """
    model_bytes = model_file_bytes(info)
    avail = (available_bytes or available_memory_bytes)()
    est = memory_decision(model_bytes=model_bytes, available_bytes=avail, cfg=cfg)
    verdict = check_in_child(model_dir=model_dir, info=info, cfg=cfg, threads=threads)
    load_s, _, session = load_and_check(model_dir=model_dir, info=info, cfg=cfg, threads=threads, golden=False)
    return GateReport(load_s=load_s, golden_calls=info.golden_calls, median_latency_ms=verdict.median_latency_ms,
                      executed_precision=session.executed_precision, device=str(session.device),
                      estimated_bytes=est, available_bytes=avail, child_s=verdict.wall_s), session


#: Retry-After (s) of requests while the serving model is unloaded to make room (unload_first)
UNLOAD_RETRY_AFTER_S = 1.0


def make_room(*, agent, info: BundleInfo, cfg: UpdateSection, available_bytes: Callable[[], int], why: str) -> bool:
    """Unload the agent's serving model when ``info``'s model fits only without it (policy
    ``unload_first``). Returns whether it unloaded.

    Raises:
        GateMemoryError: no room (policy ``refuse``, or not even with the model unloaded).
    """
    cur = agent.current()
    loaded = model_file_bytes(cur.info) if cur is not None else 0
    plan = memory_plan(model_bytes=model_file_bytes(info), available_bytes=available_bytes(),
                       loaded_bytes=loaded, cfg=cfg)
    if plan is MemoryPlan.FITS:
        return False
    log.warning("update.unload_first", model=info.name, release=info.release, why=why)
    agent.unload(reason=why, retry_after_s=UNLOAD_RETRY_AFTER_S)
    return True


def reload_after_unload(agent) -> None:
    """Serve the active model again after :func:`make_room` (the gate failed). Never raises."""
    try:
        agent.reload_pointers()
    except Exception as e:  # the agent stays up and not ready; status() and the log say why
        log.error("update.reload_old_failed", error=f"{type(e).__name__}: {e}")


def available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)
