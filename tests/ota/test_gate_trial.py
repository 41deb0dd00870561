"""Gate and trial failures with real ONNX models: each ends the update with its own reason
and the old model serving."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from device_agent.ota import Reason, State
from device_agent.ota.errors import (
    GateFallbackError, GateLatencyError, GateMemoryError, GateNaNError, GateSchemaError,
)

from .conftest import GOLDEN_X


@pytest.mark.parametrize("kind,bundle_kw,device_kw,err", [
    ("nan", {}, {}, GateNaNError),
    ("wide", {}, {}, GateSchemaError),
    ("slow", {"latency_budget_ms": 0.5}, {}, GateLatencyError),
    ("good2", {}, {"memory_reserve_bytes": 1 << 50}, GateMemoryError),
], ids=["nan", "wrong-shape", "slow", "no-memory"])
def test_gate_refuses_before_switch(env, kind, bundle_kw, device_kw, err):
    env.publish(env.bundle(release=2, kind=kind, **bundle_kw))
    store, agent, up = env.device(**device_kw)
    old = store.active()
    res = up.update("m")
    try:
        assert isinstance(up.last_error, err), (res, up.last_error)
        assert res.state is State.FAILED and res.reason is err.reason
        assert store.active() == old and agent.current().ref.sha256 == old.sha256
        assert [h[0] for h in up.last().history][-2:] == ["gate", "failed"]
    finally:
        agent.close()


def test_gate_refuses_precision_fallback(env, monkeypatch):
    """The bundle says int8-static but the engine runs fp32: a silent fallback is refused."""
    from runtime.contracts.bundle import Precision

    import tests.ota.conftest as c

    real = c.BundleInfo

    def as_int8(**kw):
        kw["precision"] = Precision.INT8_STATIC
        return real(**kw)

    monkeypatch.setattr(c, "BundleInfo", as_int8)
    env.publish(env.bundle(release=2, kind="good2"))
    monkeypatch.undo()
    store, agent, up = env.device()
    res = up.update("m")
    assert isinstance(up.last_error, GateFallbackError), (res, up.last_error)
    assert "executes fp32" in str(up.last_error)
    assert store.active().release == 1
    agent.close()


def _load(agent, stop, feeds, sent, failed):
    while not stop.is_set():
        try:
            agent.infer(feeds)
        except Exception:  # noqa: BLE001 - counted
            failed.append(1)
        sent.append(1)
        time.sleep(0.002)


def test_trial_error_rate_rolls_back(env):
    """Passes the gate (golden inputs are 4 wide) but fails on live traffic 8 wide."""
    env.publish(env.bundle(release=2, kind="reshape"))
    store, agent, up = env.device(trial_requests=400, trial_duration_s=5.0, trial_probe_interval_s=0.5,
                                  trial_min_requests=10)
    old = store.active()
    stop, sent, failed = threading.Event(), [], []
    wide = {"x": np.ones((1, 8), np.float32)}
    t = None

    def on_event(ev):
        nonlocal t
        if ev.state == "trial" and t is None:
            t = threading.Thread(target=_load, args=(agent, stop, wide, sent, failed))
            t.start()

    res = up.update("m", on_event=on_event)
    stop.set()
    t.join()
    assert res.state is State.ROLLED_BACK and res.reason is Reason.TRIAL_ERROR_RATE, res
    assert store.active() == old and agent.current().ref.sha256 == old.sha256
    np.testing.assert_allclose(agent.infer({"x": GOLDEN_X[0]})["y"], GOLDEN_X[0] * 2 + 1)
    agent.close()


def test_trial_latency_rolls_back(env):
    """Fast enough for a lenient gate, far past the budget on the trial's p95."""
    env.publish(env.bundle(release=2, kind="slow", latency_budget_ms=0.5))
    store, agent, up = env.device(gate_latency_factor=1e6, trial_latency_factor=2.0, trial_requests=4)
    old = store.active()
    res = up.update("m")
    assert res.state is State.ROLLED_BACK and res.reason is Reason.TRIAL_LATENCY, (res, up.last_error)
    assert store.active() == old and agent.current().ref.sha256 == old.sha256
    assert store.previous().release == 2  # the rejected model stays until GC, for inspection
    agent.close()


def test_cancel_before_switch_aborts(env):
    env.publish(env.bundle(release=2, kind="good2"))
    store, agent, up = env.device()
    old = store.active()

    def on_event(ev):
        if ev.state == "verify":
            up.cancel()

    res = up.update("m", on_event=on_event)
    assert res.state is State.ABORTED and res.reason is Reason.CANCELLED
    assert store.active() == old
    agent.close()
