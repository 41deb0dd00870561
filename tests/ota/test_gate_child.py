"""The gate child's verdict protocol (pure) and its timeout (a real child process)."""

from __future__ import annotations

import json
import signal

import pytest

from device_agent.ota import errors
from device_agent.ota.config import UpdateSection
from device_agent.ota.gate_child import check_in_child, verdict_from


def _v(returncode=0, stdout="", stderr=""):
    return verdict_from(returncode=returncode, stdout=stdout, stderr=stderr, where="m r2", wall_s=0.5)


def test_a_signal_is_a_crash_naming_it():
    with pytest.raises(errors.GateCrashError, match="killed by SIGFPE.*stderr: ...boom") as ei:
        _v(-signal.SIGFPE, stderr="boom\n")
    assert ei.value.reason is errors.Reason.GATE_CRASHED


def test_the_childs_typed_error_comes_back_as_that_class():
    out = 'noise\n{"ok": false, "error": "GateToleranceError", "message": "m r2: golden call 0: y off"}\n'
    with pytest.raises(errors.GateToleranceError, match="golden call 0: y off"):
        _v(0, out)


@pytest.mark.parametrize("out,code", [("", 1), ("not json", 0), ('{"ok": false, "error": "OSError"}', 0)])
def test_no_verdict_or_an_unknown_error_is_a_crash(out, code):
    with pytest.raises(errors.GateCrashError):
        _v(code, out)


def test_a_pass_carries_the_latency():
    v = _v(0, json.dumps({"ok": True, "load_s": 0.01, "median_latency_ms": 1.5}))
    assert (v.median_latency_ms, v.load_s, v.wall_s) == (1.5, 0.01, 0.5)


def test_a_child_past_the_timeout_is_killed(env):
    store, agent, _ = env.device()
    sha = store.active().sha256
    with pytest.raises(errors.GateLatencyError, match="gate_timeout_s"):
        check_in_child(model_dir=store.model_dir(sha), info=store.info(sha),
                       cfg=UpdateSection(gate_timeout_s=0.01), threads=None)
    assert check_in_child(model_dir=store.model_dir(sha), info=store.info(sha), cfg=UpdateSection(),
                          threads=None).median_latency_ms is not None
