"""The pure core: transition table, journal round trip, recovery decisions, trial judge."""

from __future__ import annotations

import dataclasses

import pytest

from device_agent.ota import states as sm
from device_agent.ota.errors import Reason, UpdateStateError
from device_agent.ota.states import Action, RecoveryPolicy, State, TrialStats, Verdict

NOW = "2026-11-26T17:00:00.000+00:00"


def _j(state: State, **kw) -> sm.Journal:
    j = sm.begin(deployment_id="d1", model="m", requested_release=None, now=NOW)
    return dataclasses.replace(j, state=state, **kw)


def test_happy_order_and_out_of_order_raises():
    j = sm.begin(deployment_id="d", model="m", requested_release=2, now=NOW)
    for s in (State.VERIFY, State.STAGE, State.GATE, State.SWITCH, State.TRIAL, State.COMMIT):
        j = sm.advance(j, s, now=NOW)
    assert j.finished and j.reason is Reason.OK
    with pytest.raises(UpdateStateError):
        sm.advance(j, State.FETCH, now=NOW)
    with pytest.raises(UpdateStateError, match="fetch -> switch"):
        sm.advance(sm.begin(deployment_id="d", model="m", requested_release=None, now=NOW), State.SWITCH, now=NOW)
    with pytest.raises(UpdateStateError, match="needs a reason"):
        sm.advance(_j(State.GATE), State.FAILED, now=NOW)


def test_no_abort_after_switch():
    for s in (State.SWITCH, State.TRIAL):
        with pytest.raises(UpdateStateError):
            sm.advance(_j(s), State.ABORTED, now=NOW, reason=Reason.CANCELLED)


def test_journal_json_round_trip_and_strictness():
    j = sm.advance(_j(State.GATE), State.FAILED, now=NOW, reason=Reason.GATE_NAN, detail="x")
    assert sm.Journal.from_json(j.to_json()) == j
    bad = j.to_json() | {"surprise": 1}
    with pytest.raises(UpdateStateError, match="unknown keys"):
        sm.Journal.from_json(bad)


@pytest.mark.parametrize("state,entries,crashes,active,policy,action,reason", [
    (State.FETCH, 2, 0, False, RecoveryPolicy.RESUME_TRIAL, Action.RESUME, None),
    (State.STAGE, 4, 0, False, RecoveryPolicy.RESUME_TRIAL, Action.FAIL, Reason.CRASH_LOOP),
    (State.GATE, 2, 0, False, RecoveryPolicy.RESUME_TRIAL, Action.FAIL, Reason.GATE_CRASHED),
    (State.SWITCH, 2, 0, False, RecoveryPolicy.RESUME_TRIAL, Action.ENSURE_OLD_AND_FAIL, Reason.SWITCH_FAILED),
    (State.SWITCH, 2, 0, True, RecoveryPolicy.RESUME_TRIAL, Action.RESUME_TRIAL, None),
    (State.TRIAL, 2, 0, True, RecoveryPolicy.RESUME_TRIAL, Action.RESUME_TRIAL, None),
    (State.TRIAL, 2, 1, True, RecoveryPolicy.RESUME_TRIAL, Action.ROLL_BACK, Reason.TRIAL_CRASH_LOOP),
    (State.TRIAL, 2, 0, True, RecoveryPolicy.ROLLBACK, Action.ROLL_BACK, Reason.TRIAL_INTERRUPTED),
])
def test_recovery_plan(state, entries, crashes, active, policy, action, reason):
    j = _j(state, entries=entries, trial_crashes=crashes)
    r = sm.plan_recovery(j, policy=policy, max_state_entries=3, max_trial_crashes=2, new_model_active=active)
    assert (r.action, r.reason) == (action, reason)


def test_trial_judge():
    kw = dict(window_requests=10, window_s=5.0, max_error_rate=0.1, min_requests_for_rate=5,
              max_p95_latency_ms=10.0)
    assert sm.judge_trial(TrialStats(3, 3, 1.0), elapsed_s=0.1, **kw)[0] is Verdict.CONTINUE
    v, r, _ = sm.judge_trial(TrialStats(5, 2, 1.0), elapsed_s=0.1, **kw)
    assert (v, r) == (Verdict.FAIL, Reason.TRIAL_ERROR_RATE)
    v, r, _ = sm.judge_trial(TrialStats(10, 0, 50.0), elapsed_s=0.1, **kw)
    assert (v, r) == (Verdict.FAIL, Reason.TRIAL_LATENCY)
    v, r, _ = sm.judge_trial(TrialStats(10, 1, 1.0), elapsed_s=0.1, **kw)
    assert (v, r) == (Verdict.PASS, Reason.OK)
    assert sm.judge_trial(TrialStats(), elapsed_s=6.0, **kw)[0] is Verdict.PASS
