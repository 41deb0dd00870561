"""Windowed request metrics: disjoint windows, outcomes, percentiles (a fake clock, no sleeping)."""

from __future__ import annotations

import pytest

from device_agent.agent.metrics import Outcome, RequestWindow


def test_windows_are_disjoint_and_totals_accumulate():
    now = [100.0]
    m = RequestWindow(clock=lambda: now[0], max_samples=1000)
    for i in range(100):
        m.record("a" * 64, Outcome.OK, (i + 1) / 1000)
    m.record("a" * 64, Outcome.ERROR, 0.5)
    m.record(None, Outcome.REJECTED)
    now[0] = 110.0
    s = m.snapshot()
    assert (s.requests, s.ok, s.errors, s.rejected) == (102, 100, 1, 1)
    assert s.window_s == 10.0 and s.latency_samples == 100
    assert s.latency_ms_p50 == pytest.approx(50.5) and s.latency_ms_max == pytest.approx(100.0)
    assert s.error_rate == pytest.approx(1 / 101)
    assert s.by_model == {"a" * 64: {"requests": 101, "errors": 1}}
    assert m.roll() == s
    now[0] = 115.0
    m.record("b" * 64, Outcome.OK, 0.002)
    s2 = m.roll()
    assert (s2.window_start_ts, s2.window_end_ts, s2.requests) == (110.0, 115.0, 1)
    assert (s2.requests_total, s2.errors_total) == (103, 1)
    empty = m.snapshot()
    assert empty.requests == 0 and empty.latency_ms_p50 is None and empty.to_json()["error_rate"] == 0.0


def test_latency_samples_are_bounded():
    m = RequestWindow(max_samples=10)
    for i in range(50):
        m.record("x", Outcome.OK, i / 1000)
    s = m.snapshot()
    assert s.ok == 50 and s.latency_samples == 10 and s.latency_ms_p50 == pytest.approx(44.5)


def test_status_mqtt_and_trial_agree_on_the_same_traffic():
    """One window definition: the agent's own window (status), an MQTT window and a trial
    window fed the same requests report the same counts and percentiles."""
    import numpy as np

    from device_agent.ota.trial import trial_stats

    agent_w, mqtt_w, trial_w = RequestWindow(), RequestWindow(), RequestWindow(model="a" * 64)
    rng = np.random.default_rng(0)
    for i, lat in enumerate(rng.exponential(0.004, 500)):
        sha = "a" * 64 if i % 5 else "b" * 64
        ok = i % 17 != 0
        agent_w.record(sha, Outcome.OK if ok else Outcome.ERROR, float(lat))
        for w in (mqtt_w, trial_w):
            w.observe(sha, ok, float(lat))
    a, m, t = agent_w.snapshot(), mqtt_w.roll(), trial_w.snapshot()
    assert (a.requests, a.errors, a.latency_ms_p95) == (m.requests, m.errors, m.latency_ms_p95)
    assert t.requests == a.by_model["a" * 64]["requests"] and t.errors == a.by_model["a" * 64]["errors"]
    assert trial_stats(t).p95_ms == t.latency_ms_p95 is not None
