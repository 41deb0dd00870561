"""Desired-state reconciliation and commands: decisions as pure functions, state persisted
atomically.

Desired-state rules (the operator writes a retained, versioned document):
- ``version <= applied_version`` -> ignored: duplicates, replays and stale documents are
  harmless, and the retained topic makes a reconnecting device converge on the newest one.
- the requested model+release is already active -> recorded as committed without an update.
- otherwise the version is recorded as applied *before* the update starts (write-ahead), so
  a crash during the update does not re-run it on restart; the update's own journal
  (device_agent.ota) finishes or undoes it, and the outcome is reported.

The persisted :class:`ControlState` (``control.json`` in the queue directory) holds the
applied version, the last desired document, the last deployment result and the rejected
releases with their reasons.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Protocol

from runtime.contracts.mqtt.payloads import Desired
from runtime.fsutil import atomic_write_json

MAX_REJECTED = 20
#: Terminal update states that reject a release (docs/design.md, issue 5).
REJECTING_STATES = frozenset({"rolled_back", "failed"})


class AgentLike(Protocol):
    """What the control plane needs from device_agent.agent.Agent."""

    def status(self) -> dict: ...
    def rollback(self) -> Any: ...
    def add_request_observer(self, fn: Any) -> None: ...


class UpdaterLike(Protocol):
    """What the control plane needs from device_agent.ota.Updater."""

    def update(self, model: str, release: int | None = None, deployment_id: str | None = None,
               on_event: Any = None, *, authority: Any = None) -> Any: ...
    def cancel(self) -> Any: ...


class Decision(str, enum.Enum):
    IGNORE_STALE = "ignore_stale"
    ALREADY_ACTIVE = "already_active"
    DEPLOY = "deploy"


@dataclass(frozen=True)
class ControlState:
    applied_version: int = 0
    desired: dict | None = None
    last_deployment: dict | None = None
    rejected: tuple[dict, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejected"] = list(self.rejected)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ControlState":
        return cls(applied_version=int(d.get("applied_version", 0)), desired=d.get("desired"),
                   last_deployment=d.get("last_deployment"),
                   rejected=tuple(d.get("rejected") or ()))


def decide(state: ControlState, desired: Desired, active: Mapping[str, Any] | None) -> Decision:
    """What to do with a valid desired-state document."""
    if desired.version <= state.applied_version:
        return Decision.IGNORE_STALE
    if active and active.get("name") == desired.model and active.get("release") == desired.release:
        return Decision.ALREADY_ACTIVE
    return Decision.DEPLOY


def accept(state: ControlState, desired: Desired) -> ControlState:
    """Write-ahead record of a desired document about to be acted on."""
    return replace(state, applied_version=desired.version, desired=desired.to_json(),
                   last_deployment=deployment_record(desired, state="accepted", reason_code=None,
                                                     detail="deployment started"))


def deployment_record(desired: Desired, *, state: str, reason_code: str | None, detail: str) -> dict:
    return {"deployment_id": desired.deployment_id, "model": desired.model,
            "release": desired.release, "version": desired.version, "state": state,
            "reason_code": reason_code, "detail": detail, "ts_ms": int(time.time() * 1000)}


def finish(state: ControlState, desired: Desired, *, final_state: str, reason_code: str | None,
           detail: str) -> ControlState:
    """Record an update's outcome; a failed or rolled-back release joins ``rejected``."""
    record = deployment_record(desired, state=final_state, reason_code=reason_code, detail=detail)
    rejected = state.rejected
    if final_state in REJECTING_STATES:
        rejected = (rejected + (record,))[-MAX_REJECTED:]
    return replace(state, last_deployment=record, rejected=rejected)


def local_finish(state: ControlState, *, deployment_id: str, model: str, release: int | None,
                 final_state: str, reason_code: str | None, detail: str) -> ControlState:
    """An update the device ran on its own (polling) ended: a failed or rolled-back release
    joins ``rejected``; ``last_deployment`` stays the operator's last one."""
    if final_state not in REJECTING_STATES:
        return state
    record = {"deployment_id": deployment_id, "model": model, "release": release, "version": None,
              "state": final_state, "reason_code": reason_code, "detail": detail, "ts_ms": int(time.time() * 1000)}
    return replace(state, rejected=(state.rejected + (record,))[-MAX_REJECTED:])


def event_category(state: str, reason_code: str | None) -> str | None:
    """The ``events`` category of an update event, or None when it is not an event."""
    code = reason_code or ""
    if code.startswith("security."):
        return "security"
    if state in REJECTING_STATES:
        if code.startswith("gate") or code.startswith("trial"):
            return code.split(".", 1)[0]
        return "deploy"
    return None


def plain(value: Any) -> Any:
    """An enum's value, else the value itself (update events may carry enums)."""
    return getattr(value, "value", value)


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a dataclass/object or a mapping (UpdateEvent/UpdateResult)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def reason_of(obj: Any) -> str | None:
    """The reason code of an UpdateEvent/UpdateResult/UpdateError (``reason_code`` or a
    ``reason`` enum); ``ok`` counts as no reason."""
    code = field_of(obj, "reason_code") or field_of(obj, "reason")
    code = plain(code)
    return None if code in (None, "ok") else str(code)


class ControlStore:
    """``control.json``: load at start, replace atomically on every change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> ControlState:
        try:
            return ControlState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return ControlState()
        except (ValueError, TypeError) as e:
            # A corrupt file would block every future deployment; start over but keep it.
            self.path.rename(self.path.with_suffix(".corrupt"))
            return ControlState(last_deployment={"state": "unknown", "reason_code": "control.corrupt",
                                                 "detail": f"{self.path}: {e}"})

    def save(self, state: ControlState) -> None:
        atomic_write_json(self.path, state.to_json())
