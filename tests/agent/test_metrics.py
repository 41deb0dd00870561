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


def test_oip_statistics_are_the_windows_totals_as_triton_counts_them():
    """/v2/models/stats reads the agent window's totals: ok and failed counts, the whole
    nanoseconds of each outcome's latencies (each truncated, as Triton adds them), the last
    ok/failed request's time in ms; rejected requests (the model never ran) are not counted."""
    import numpy as np

    from device_agent.serving.stats import model_stats
    from device_agent.store import ModelRef

    now = [1_700_000_000.25]
    w = RequestWindow(clock=lambda: now[0])
    lats = np.random.default_rng(3).exponential(0.004, 300)
    for i, lat in enumerate(lats):
        now[0] += 0.01
        w.observe("a" * 64, i % 7 != 0, float(lat))
    last = now[0]
    now[0] += 5.0
    w.record("a" * 64, Outcome.REJECTED)                            # later, but not an inference
    ok_ns = sum(int(float(v) * 1e9) for i, v in enumerate(lats) if i % 7)
    fail_ns = sum(int(float(v) * 1e9) for i, v in enumerate(lats) if not i % 7)
    a = ModelRef(sha256="a" * 64, name="m", version="1.0.0", release=1, engine="onnxruntime", precision="fp32")
    b = ModelRef(sha256="b" * 64, name="other", version="2.0.0", release=2, engine="onnxruntime", precision="fp32")
    got, never = model_stats(w.totals(), [a, b])
    n_ok = sum(1 for i in range(300) if i % 7)
    assert (got["name"], got["version"], got["inference_count"], got["execution_count"]) == ("m", "1.0.0", n_ok, n_ok)
    s = got["inference_stats"]
    assert s["success"] == s["compute_infer"] == {"count": n_ok, "ns": ok_ns}
    assert s["fail"] == {"count": 300 - n_ok, "ns": fail_ns} and s["queue"] == {"count": n_ok, "ns": 0}
    assert got["last_inference"] == int(last * 1000)
    assert never["inference_count"] == never["last_inference"] == never["inference_stats"]["fail"]["count"] == 0
    assert abs(w.totals()["a" * 64].latency_sum_s * 1e9 - ok_ns) < n_ok   # the histogram's sum: the same requests
