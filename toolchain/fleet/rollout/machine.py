"""The rollout's state machine: what to do next, from the journal state and the fleet view.

Statuses and their order::

    running --(wave baked, criteria met)--> running (next wave) --(last wave)--> completed
       |  \\--(breach: on_* = pause)--> paused --(resume)--> running
       |   \\-(breach: abort | operator abort)--> aborted
       '-----(breach: rollback | operator rollback)--> rolling_back --> rolled_back
    paused --(abort)--> aborted;  paused --(rollback)--> rolling_back

A wave: its devices are assigned (a signed desired state each, at most ``concurrency``
updating at once over the whole rollout); every device gets a result (committed; failed
with the device's reason; ``timeout`` when nothing came within ``install_timeout_s``, which
covers devices that never answer; ``report.invalid`` for garbage); install health is judged
on every result, model health on every tick against the interim boundary; when every device
of the wave has a result the bake starts; at its end install success and the final model
look decide: advance, or the wave's breach action.

Abort and rollback never leave a stale order behind: a device that was assigned but never
accepted has its retained desired state cleared (it gets nothing when it comes back); one
that accepted gets, on rollback, an operator-signed desired state back to the release it
ran before (docs/ota.md, the release-counter rule).

:func:`step` does no I/O: it changes the :class:`RolloutState` it is given and returns the
actions (:class:`Assign`, :class:`Clear`) for the shell to journal and publish.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from runtime.contracts.mqtt.payloads import Desired

from .health import Verdict, install_verdict, model_verdict
from .observe import FleetView
from .plan import Action, RolloutPlan


class Status(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"


TERMINAL = frozenset({Status.ABORTED, Status.ROLLED_BACK, Status.COMPLETED})
FAILED_STATES = frozenset({"failed", "rolled_back", "aborted"})


@dataclass
class Assignment:
    version: int
    ms: int
    from_model: str | None = None
    from_release: int | None = None


@dataclass
class Assign:
    """Publish this (signed) desired state to ``device``."""

    device: str
    desired: Desired


@dataclass
class Clear:
    """Clear ``device``'s retained desired state (it never accepted it)."""

    device: str


@dataclass
class RolloutState:
    plan: RolloutPlan
    waves: list[list[str]]
    status: Status = Status.RUNNING
    wave: int = 0
    started_ms: dict[int, int] = field(default_factory=dict)
    settled_ms: dict[int, int] = field(default_factory=dict)
    assigned: dict[str, Assignment] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)     # device -> {state, reason, ms}
    rollback: dict[str, Assignment] = field(default_factory=dict)
    cleared: list[str] = field(default_factory=list)
    breaches: list[dict] = field(default_factory=list)
    epoch_ms: int = 0
    control_version: int = 0
    reason: str = ""
    verdicts: dict[str, Any] = field(default_factory=dict)      # the last install/model verdicts

    def __post_init__(self) -> None:
        self._wave_of = {d: i for i, w in enumerate(self.waves) for d in w}

    @property
    def deployment_id(self) -> str:
        return self.plan.id

    @property
    def rollback_id(self) -> str:
        return f"{self.plan.id}-rollback"

    def wave_of(self, device: str) -> int:
        return self._wave_of[device]


# ------------------------------------------------------------------ device results
def outcome(st: RolloutState, device: str, view: FleetView, now_ms: int, timeout_s: float) -> dict | None:
    """The device's result for this rollout (``{state, reason, ms}``), or None while pending."""
    a = st.assigned[device]
    o = view.obs(device)
    if o.invalid:
        return {"state": "failed", "reason": f"report.invalid: {o.invalid}", "ms": now_ms}
    rep = o.reported or {}
    last = rep.get("last_deployment") or {}
    if last.get("deployment_id") == st.deployment_id and last.get("version") in (a.version, None):
        if last.get("state") == "commit":
            return {"state": "committed", "reason": None, "ms": now_ms}
        if last.get("state") in FAILED_STATES:
            return {"state": "failed", "reason": last.get("reason_code") or last.get("state"), "ms": now_ms}
    dep = o.deploy or {}  # the progress event arrives a moment before the reported state
    if dep.get("deployment_id") == st.deployment_id and dep.get("state") in FAILED_STATES | {"commit"}:
        if dep["state"] == "commit":
            return {"state": "committed", "reason": None, "ms": now_ms}
        return {"state": "failed", "reason": dep.get("reason_code") or dep.get("state"), "ms": now_ms}
    active = o.active
    if (active.get("name"), active.get("release")) == (st.plan.model, st.plan.release) and \
            (rep.get("applied_version") or 0) >= a.version:
        return {"state": "committed", "reason": None, "ms": now_ms}
    if now_ms - a.ms > timeout_s * 1000:
        why = "offline" if not o.online else "no result"
        return {"state": "failed", "reason": f"timeout: {why} {timeout_s:.0f} s after the assignment", "ms": now_ms}
    return None


def _update_results(st: RolloutState, view: FleetView, now_ms: int) -> None:
    """Record each assigned device's result once; only a timeout may still turn into a late
    real result (a device that was offline comes back and commits)."""
    for d in st.assigned:
        old = st.results.get(d)
        if old is not None and (old["state"] == "committed" or not old["reason"].startswith("timeout")):
            continue
        new = outcome(st, d, view, now_ms, st.plan.waves[st.wave_of(d)].criteria.install_timeout_s)
        if new is not None and (old is None or new["state"] == "committed" or not new["reason"].startswith("timeout")):
            st.results[d] = new


def accepted(st: RolloutState, device: str, view: FleetView) -> bool:
    """The device took the rollout's desired state (so it may have moved)."""
    rep = view.obs(device).reported or {}
    return (rep.get("applied_version") or 0) >= st.assigned[device].version or \
        st.results.get(device, {}).get("state") == "committed"


# ------------------------------------------------------------------ the step
def step(st: RolloutState, view: FleetView, now_ms: int) -> list:
    """Advance ``st`` (changed in place) by what ``view`` shows at ``now_ms``; the actions to take."""
    _update_results(st, view, now_ms)
    if st.status is Status.RUNNING:
        return _run_wave(st, view, now_ms)
    if st.status is Status.ROLLING_BACK:
        return _roll_back(st, view, now_ms)
    return []


def _run_wave(st: RolloutState, view: FleetView, now_ms: int) -> list:
    w = st.wave
    spec = st.plan.waves[w]
    c = spec.criteria
    st.started_ms.setdefault(w, now_ms)
    devices = st.waves[w]
    res = [st.results[d] for d in devices if d in st.results]
    committed = sum(r["state"] == "committed" for r in res)
    since = [r for r in res if r["ms"] >= st.epoch_ms]
    iv = install_verdict(size=len(devices), committed=committed, failed=len(res) - committed,
                         failed_since_ack=sum(r["state"] == "failed" for r in since), results_since_ack=len(since),
                         c=c, settled=False)
    mv = model_verdict(view.new, view.control, c, final=False)
    st.verdicts = {"wave": w, "install": iv.to_json(), "model": mv.to_json()}
    if iv.state == "breach":
        return _breach(st, view, "install", iv, c.on_install_failure, now_ms)
    if mv.state == "breach":
        return _breach(st, view, "model", mv, c.on_model_regression, now_ms)
    actions = _assign(st, view, devices, now_ms)
    if len(res) < len(devices):
        return actions
    settled = st.settled_ms.setdefault(w, now_ms)
    if now_ms < settled + c.bake_s * 1000:
        return actions
    iv = install_verdict(size=len(devices), committed=committed, failed=len(res) - committed, failed_since_ack=0,
                         results_since_ack=0, c=c, settled=True)
    if iv.state == "breach":
        return _breach(st, view, "install", iv, c.on_install_failure, now_ms)
    if c.bake_s > 0:
        mv = model_verdict(view.new, view.control, c, final=True)
        st.verdicts["model"] = mv.to_json()
        if mv.state == "breach":
            return _breach(st, view, "model", mv, c.on_model_regression, now_ms)
        if mv.state == "collecting":
            if now_ms < settled + c.bake_limit_s * 1000:
                return actions
            mv = Verdict("breach", [f"model health inconclusive after {c.bake_limit_s:.0f} s of bake: "
                                    + "; ".join(mv.reasons)], mv.values)
            return _breach(st, view, "model", mv, Action.PAUSE, now_ms)
    if w + 1 < len(st.waves):
        st.wave = w + 1
        st.reason = f"wave {w + 1} passed ({committed}/{len(devices)} committed); wave {w + 2} started"
        return actions + _run_wave(st, view, now_ms)
    st.status = Status.COMPLETED
    st.reason = f"every wave passed; {sum(r['state'] == 'committed' for r in st.results.values())} device(s) on r{st.plan.release}"
    return actions


def _in_flight(st: RolloutState) -> int:
    return sum(1 for d in st.assigned if d not in st.results)


def _assign(st: RolloutState, view: FleetView, devices: list[str], now_ms: int) -> list:
    slots = st.plan.concurrency - _in_flight(st)
    out = []
    for d in devices:
        if slots <= 0:
            break
        if d in st.assigned:
            continue
        o = view.obs(d)
        active = o.active
        st.assigned[d] = Assignment(version=o.next_version(), ms=now_ms, from_model=active.get("name"),
                                    from_release=active.get("release"))
        out.append(Assign(d, Desired(version=st.assigned[d].version, deployment_id=st.deployment_id,
                                     model=st.plan.model, release=st.plan.release, issued_at_ms=now_ms,
                                     issued_by=f"edgeship-rollout/{st.plan.id}")))
        slots -= 1
    return out


def _breach(st: RolloutState, view: FleetView, kind: str, v: Verdict, action: Action, now_ms: int) -> list:
    st.breaches.append({"ms": now_ms, "wave": st.wave + 1, "kind": kind, "reasons": v.reasons,
                        "criteria": v.breached, "values": v.values, "action": action.value})
    st.reason = f"wave {st.wave + 1}: {kind} health breach: {'; '.join(v.reasons)} -> {action.value}"
    return apply_action(st, view, action, now_ms)


def apply_action(st: RolloutState, view: FleetView, action: Action | str, now_ms: int) -> list:
    """An operator's (or a breach's) action. ``resume`` continues a paused rollout."""
    action = action.value if isinstance(action, Action) else action
    if st.status in TERMINAL:
        return []
    if action == "pause" and st.status is Status.RUNNING:
        st.status = Status.PAUSED
    elif action == "resume" and st.status is Status.PAUSED:
        st.status, st.epoch_ms = Status.RUNNING, now_ms  # judge what happens from now on
        view.reset_epoch(now_ms)
        st.reason = "resumed by the operator"
    elif action == "abort" and st.status in (Status.RUNNING, Status.PAUSED):
        st.status = Status.ABORTED
        return _clear_unaccepted(st, view)
    elif action == "rollback" and st.status in (Status.RUNNING, Status.PAUSED):
        st.status = Status.ROLLING_BACK
        return _roll_back(st, view, now_ms)
    return []


def _clear_unaccepted(st: RolloutState, view: FleetView) -> list:
    out = []
    for d in st.assigned:
        if d not in st.cleared and not accepted(st, d, view) and st.results.get(d, {}).get("state") != "committed":
            st.cleared.append(d)
            out.append(Clear(d))
    return out


def _roll_back(st: RolloutState, view: FleetView, now_ms: int) -> list:
    out = _clear_unaccepted(st, view)
    pending = 0
    for d, a in st.assigned.items():
        if d in st.cleared or a.from_release is None or a.from_release == st.plan.release:
            continue
        o = view.obs(d)
        active = o.active
        done = (active.get("name"), active.get("release")) == (a.from_model, a.from_release)
        if done and st.results.get(d, {}).get("state") == "failed" and d not in st.rollback:
            continue  # its update failed and it never left its release: nothing to undo
        if d not in st.rollback:
            st.rollback[d] = Assignment(version=max(o.next_version(), a.version + 1), ms=now_ms)
            out.append(Assign(d, Desired(version=st.rollback[d].version, deployment_id=st.rollback_id,
                                         model=a.from_model, release=a.from_release, issued_at_ms=now_ms,
                                         issued_by=f"edgeship-rollout/{st.plan.id}")))
        rep = o.reported or {}
        last = rep.get("last_deployment") or {}
        done = done and (rep.get("applied_version") or 0) >= st.rollback[d].version  # it took the rollback
        gave_up = last.get("deployment_id") == st.rollback_id and last.get("state") in FAILED_STATES
        if not (done or gave_up or now_ms - st.rollback[d].ms > st.plan.waves[-1].criteria.install_timeout_s * 1000):
            pending += 1
    if pending == 0:
        st.status = Status.ROLLED_BACK
        st.reason = (st.reason + "; " if st.reason else "") + f"{len(st.rollback)} device(s) moved back"
    return out
