"""The update state machine: states, the allowed transitions, the journal value, recovery.

Pure: values in, values out; no I/O, no clock (the caller passes ``now``). The shell
(``updater.py``) persists every new :class:`Journal` *before* acting on it.

Allowed order::

    fetch -> verify -> stage -> gate -> switch -> trial -> commit
      |        |         |       |        |        '----> rolled_back
      '--------'---------'-------'--------'-------------> failed   (switch: before the flip)
      '--------'---------'-------'----------------------> aborted  (cancelled before switch)
                                          switch -------> rolled_back

What each state means once it is in the journal (the work it names may be half done):
``fetch`` refresh trusted metadata and download; ``verify`` re-check the download against
the signed facts; ``stage`` install into the store; ``gate`` load beside the old model and
test; ``switch`` flip the active pointer and the agent; ``trial`` watch live traffic;
``commit`` the new model stays. Re-entering a state after a crash counts; a state entered
more than ``max_state_entries`` times in a row ends the update (crash-loop breaker).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from .errors import Reason, UpdateStateError


class State(str, enum.Enum):
    FETCH = "fetch"
    VERIFY = "verify"
    STAGE = "stage"
    GATE = "gate"
    SWITCH = "switch"
    TRIAL = "trial"
    COMMIT = "commit"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ABORTED = "aborted"


TERMINAL = frozenset({State.COMMIT, State.ROLLED_BACK, State.FAILED, State.ABORTED})
#: states in which the old model is still the active one
BEFORE_SWITCH = frozenset({State.FETCH, State.VERIFY, State.STAGE, State.GATE})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.FETCH: frozenset({State.VERIFY, State.FAILED, State.ABORTED}),
    State.VERIFY: frozenset({State.STAGE, State.FAILED, State.ABORTED}),
    State.STAGE: frozenset({State.GATE, State.FAILED, State.ABORTED}),
    State.GATE: frozenset({State.SWITCH, State.FAILED, State.ABORTED}),
    State.SWITCH: frozenset({State.TRIAL, State.FAILED, State.ROLLED_BACK}),
    State.TRIAL: frozenset({State.COMMIT, State.ROLLED_BACK}),
    State.COMMIT: frozenset(),
    State.ROLLED_BACK: frozenset(),
    State.FAILED: frozenset(),
    State.ABORTED: frozenset(),
}


class RecoveryPolicy(str, enum.Enum):
    """What a restart does with an update that was between switch and commit."""

    RESUME_TRIAL = "resume_trial"  # count the crash, keep the new model, restart the trial window
    ROLLBACK = "rollback"  # any interruption after the switch reverts to the old model


@dataclass(frozen=True)
class Journal:
    """Everything the updater must know after a restart. Serialized as JSON."""

    deployment_id: str
    model: str
    state: State
    started_utc: str
    updated_utc: str
    requested_release: int | None = None
    target_path: str | None = None
    target_sha256: str | None = None  # the bundle file's sha256 (signed) == the store's key
    target_length: int | None = None
    release: int | None = None
    previous_sha256: str | None = None  # the model active before the switch
    reason: Reason | None = None
    detail: str = ""
    entries: int = 1  # times the current state was entered in a row
    trial_crashes: int = 0
    history: tuple[tuple[str, str, str | None], ...] = ()  # (state, utc, reason)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["state"] = self.state.value
        d["reason"] = self.reason.value if self.reason else None
        d["history"] = [list(h) for h in self.history]
        d["schema_version"] = 1
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Journal":
        """Raises UpdateStateError on a journal this version cannot read."""
        if not isinstance(d, dict) or d.get("schema_version") != 1:
            raise UpdateStateError(f"update journal has unknown schema {d.get('schema_version') if isinstance(d, dict) else d!r}")
        d = dict(d)
        d.pop("schema_version")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UpdateStateError(f"update journal has unknown keys {sorted(unknown)}")
        try:
            d["state"] = State(d["state"])
            d["reason"] = Reason(d["reason"]) if d.get("reason") else None
        except ValueError as e:
            raise UpdateStateError(f"update journal: {e}") from e
        d["history"] = tuple(tuple(h) for h in d.get("history", ()))
        return cls(**d)


def begin(*, deployment_id: str, model: str, requested_release: int | None, now: str) -> Journal:
    """A new journal in ``fetch``."""
    return Journal(deployment_id=deployment_id, model=model, state=State.FETCH, started_utc=now,
                   updated_utc=now, requested_release=requested_release,
                   history=((State.FETCH.value, now, None),))


def advance(j: Journal, to: State, *, now: str, reason: Reason | None = None, detail: str = "",
            **facts: Any) -> Journal:
    """The journal after the transition ``j.state -> to`` (facts are journal fields to set).

    Raises:
        UpdateStateError: ``to`` is not allowed from ``j.state``.
    """
    if to not in TRANSITIONS[j.state]:
        raise UpdateStateError(
            f"update {j.deployment_id}: transition {j.state.value} -> {to.value} is not allowed "
            f"(from {j.state.value}: {sorted(s.value for s in TRANSITIONS[j.state]) or 'none, finished'})"
        )
    if to in TERMINAL and reason is None:
        reason = Reason.OK if to is State.COMMIT else None
        if reason is None:
            raise UpdateStateError(f"update {j.deployment_id}: {to.value} needs a reason code")
    return dataclasses.replace(
        j, state=to, updated_utc=now, reason=reason, detail=detail, entries=1,
        history=j.history + ((to.value, now, reason.value if reason else None),), **facts,
    )


def reenter(j: Journal, *, now: str) -> Journal:
    """The journal after a restart re-enters its current state (counts toward the breaker)."""
    if j.finished:
        raise UpdateStateError(f"update {j.deployment_id} is finished ({j.state.value}); nothing to re-enter")
    return dataclasses.replace(j, entries=j.entries + 1, updated_utc=now,
                               history=j.history + ((j.state.value, now, "restart"),))


class Action(str, enum.Enum):
    """What the shell must do with an unfinished journal after a restart."""

    RESUME = "resume"  # re-run the current state (fetch/verify/stage are idempotent)
    FAIL = "fail"  # before the switch: the old model stays; end as failed
    ENSURE_OLD_AND_FAIL = "ensure_old_and_fail"  # switch interrupted: make sure the old model is active
    RESUME_TRIAL = "resume_trial"  # keep the new model, start the trial window again
    ROLL_BACK = "roll_back"  # make the old model active again, end as rolled_back


@dataclass(frozen=True)
class Recovery:
    action: Action
    reason: Reason | None = None
    detail: str = ""


def plan_recovery(j: Journal, *, policy: RecoveryPolicy, max_state_entries: int,
                  max_trial_crashes: int, new_model_active: bool) -> Recovery:
    """Decide what to do with an unfinished journal found at start-up (``j`` already re-entered).

    ``new_model_active``: whether the store's active pointer names the update's model.
    """
    if j.state in BEFORE_SWITCH:
        if j.state is State.GATE:
            # the process died while the new model was loaded or running its golden set
            return Recovery(Action.FAIL, Reason.GATE_CRASHED, "the agent died during the gate")
        if j.entries > max_state_entries:
            return Recovery(Action.FAIL, Reason.CRASH_LOOP,
                            f"{j.state.value} entered {j.entries} times in a row")
        return Recovery(Action.RESUME)
    if j.state is State.SWITCH and not new_model_active:
        return Recovery(Action.ENSURE_OLD_AND_FAIL, Reason.SWITCH_FAILED, "the agent died during the switch")
    # switch (flipped) or trial: the new model may be what crashed the process
    crashes = j.trial_crashes + 1
    if crashes >= max_trial_crashes:
        return Recovery(Action.ROLL_BACK, Reason.TRIAL_CRASH_LOOP,
                        f"the agent died {crashes} time(s) with the new model active")
    if j.entries > max_state_entries:
        return Recovery(Action.ROLL_BACK, Reason.CRASH_LOOP, f"{j.state.value} entered {j.entries} times in a row")
    if policy is RecoveryPolicy.ROLLBACK:
        return Recovery(Action.ROLL_BACK, Reason.TRIAL_INTERRUPTED, "restart during the trial; policy is rollback")
    return Recovery(Action.RESUME_TRIAL)


# ------------------------------------------------------------------------ trial judge
@dataclass(frozen=True)
class TrialStats:
    """The new model's requests so far: counts, and the p95 latency of the successful ones
    (from the agent's request window, ``runtime.percentile``'s definition)."""

    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None


class Verdict(str, enum.Enum):
    CONTINUE = "continue"
    PASS = "pass"
    FAIL = "fail"


def judge_trial(stats: TrialStats, *, elapsed_s: float, window_requests: int, window_s: float,
                max_error_rate: float, min_requests_for_rate: int,
                max_p95_latency_ms: float | None) -> tuple[Verdict, Reason | None, str]:
    """The trial's verdict so far. Error rate fails early; latency is judged at the window's end."""
    if stats.requests >= min_requests_for_rate and stats.requests:
        rate = stats.errors / stats.requests
        if rate > max_error_rate:
            return Verdict.FAIL, Reason.TRIAL_ERROR_RATE, (
                f"{stats.errors}/{stats.requests} requests failed ({rate:.1%} > {max_error_rate:.1%})")
    done = stats.requests >= window_requests or elapsed_s >= window_s
    if not done:
        return Verdict.CONTINUE, None, ""
    p95 = stats.p95_ms
    if max_p95_latency_ms is not None and p95 is not None and p95 > max_p95_latency_ms:
        return Verdict.FAIL, Reason.TRIAL_LATENCY, f"p95 latency {p95:.1f} ms > {max_p95_latency_ms:.1f} ms"
    return Verdict.PASS, Reason.OK, f"{stats.requests} requests, {stats.errors} errors in {elapsed_s:.1f} s"
