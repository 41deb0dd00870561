"""The device's DriftMonitor on a real Agent: the sustained alarm, threshold overrides from
[drift], a model switch starting afresh (also with no traffic after it: the interval check
clears the old model's alarms), the pending list bounded by count and bytes, sampling,
bundles without a baseline."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.agent import Agent
from device_agent.config import AgentConfig, parse_config
from device_agent.configfile import ConfigError
from device_agent.monitoring.drift import DriftMonitor, DriftSection
from device_agent.store import Store
from runtime.drift.alarm import Transition


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from toolchain.demo_ota import make_tiny_build
    from toolchain.package import package_build

    work = tmp_path_factory.mktemp("drift-bundles")
    out = {}
    for release, samples in ((1, 300), (2, 300), (3, 16)):
        build = make_tiny_build(work / f"b{release}", samples=samples, scale=float(release))
        out[release] = package_build(build, artifact_id="onnxruntime-fp32", version=f"1.{release}.0",
                                     release=release, out_dir=work / "bundles", golden_samples=2)
    return out


@pytest.fixture
def agent(tmp_path, bundles):
    store = Store(tmp_path / "state")
    refs = {r: store.install_bundle(b.path) for r, b in bundles.items()}
    store.activate(refs[1].sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    yield a, refs
    a.close()


CFG = DriftSection(check_every_requests=20, sample_every_requests=1, window_checks=3, min_samples=40, sustain_checks=2)


def _feed(agent, monitor, xs, changes):
    for i, x in enumerate(xs, 1):
        agent.infer({"x": x[None].astype(np.float32)})
        if i % CFG.check_every_requests == 0:
            monitor.check()
    return changes


def test_sustained_alarm_threshold_override_and_a_switch_starts_afresh(agent, bundles):
    a, refs = agent
    m = DriftMonitor(a, CFG)
    m.attach()
    changes = []
    m.add_listener(lambda r, c: changes.extend(c))
    rng = np.random.default_rng(0)
    _feed(a, m, rng.standard_normal((200, 4)), changes)
    assert changes == [] and m.latest.checks == 10 and not m.latest.alarms
    _feed(a, m, rng.standard_normal((60, 4)) + 5, changes)
    raised = [c for c in changes if c.transition is Transition.RAISED]
    assert {c.reason_code for c in raised} >= {"drift.psi", "drift.out_of_range"}
    assert any(al.startswith("drift.out_of_range:input:x") for al in m.latest.alarms)
    a.switch_to(refs[2].sha256)
    changes.clear()
    m.check()  # no traffic yet: the check sees the switch, clears the old alarms and the report
    assert changes and {c.transition for c in changes} == {Transition.CLEARED} and m.latest is None
    changes.clear()
    _feed(a, m, rng.standard_normal((20, 4)), changes)  # the next check counts for the new model
    assert changes == [] and m.latest.checks == 1
    assert m.latest.model["release"] == 2
    # overriding the bundle's PSI threshold upwards silences psi alarms on the same shift
    loose = DriftMonitor(a, DriftSection(**{**CFG.__dict__, "psi_threshold": 100.0, "out_of_range_threshold": 0.99}))
    loose.attach()
    got = []
    loose.add_listener(lambda r, c: got.extend(c))
    _feed(a, loose, rng.standard_normal((120, 4)) + 5, got)
    assert not [c for c in got if c.reason_code == "drift.psi"] and loose.latest.thresholds.psi == 100.0
    assert loose.latest.thresholds.out_of_range_share == 0.99


def test_a_switch_with_no_traffic_clears_the_old_alarms_at_the_interval_check(agent):
    """The checker thread, woken by its interval alone (no request after the switch), sees the
    new model: the old alarms are CLEARED to the listeners, ``latest`` and /metrics drop them."""
    import threading

    from device_agent.monitoring.drift_publish import drift_source

    a, refs = agent
    m = DriftMonitor(a, DriftSection(**{**CFG.__dict__, "check_interval_s": 0.05}))
    changes, cleared = [], threading.Event()

    def listen(report, c):
        changes.extend(c)
        if any(x.transition is Transition.CLEARED for x in c):
            cleared.set()

    m.add_listener(listen)
    collect = drift_source(m)
    m.start()
    try:
        rng = np.random.default_rng(1)
        for chunk in (rng.standard_normal((20, 4)) + 5 for _ in range(4)):
            done = m._checks
            for x in chunk:
                a.infer({"x": x[None].astype(np.float32)})
            _wait(lambda: m._checks > done)
        assert m.latest.alarms and any(c.transition is Transition.RAISED for c in changes)
        assert _active_alarms(collect)
        a.switch_to(refs[2].sha256)
        assert cleared.wait(5), changes  # no request since the switch: the interval check saw it
        gone = [c for c in changes if c.transition is Transition.CLEARED]
        assert {c.model["release"] for c in gone} == {1} and {(c.reason_code, c.name) for c in gone} == {
            (c.reason_code, c.name) for c in changes if c.transition is Transition.RAISED}
        assert m.latest is None and _active_alarms(collect) == {}
    finally:
        m.stop()


def _wait(cond, timeout=5.0):
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _active_alarms(collect) -> dict:
    fam = next(f for f in collect() if f.name == "edgeship_drift_alarm")
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.value == 1}


def test_pending_calls_are_bounded_by_count_and_bytes_sampling_and_a_bundle_without_baseline(agent):
    a, refs = agent
    x, y = {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 3), np.float32)}  # 28 bytes a call
    m = DriftMonitor(a, DriftSection(max_pending_requests=50, check_every_requests=10_000, sample_every_requests=1))
    for _ in range(300):
        m.observe(refs[1].sha256, x, y)
    assert len(m._pending) == 50 and m.skipped == 250
    by_bytes = DriftMonitor(a, DriftSection(max_pending_bytes=1000, check_every_requests=10_000,
                                            sample_every_requests=1))
    for _ in range(300):
        by_bytes.observe(refs[1].sha256, x, y)
    assert len(by_bytes._pending) == 1000 // 28 and by_bytes.skipped == 300 - 1000 // 28
    by_bytes.check()  # the checker takes the calls: room again
    by_bytes.observe(refs[1].sha256, x, y)
    assert len(by_bytes._pending) == 1 and by_bytes.latest.window_samples == 1000 // 28
    big = {"x": np.zeros((40, 4), np.float32)}  # 652 bytes a call: one fits in 1000
    by_bytes.check()
    for _ in range(3):
        by_bytes.observe(refs[1].sha256, big, y)
    assert len(by_bytes._pending) == 1 and by_bytes.skipped == 300 - 1000 // 28 + 2
    by_bytes.check()
    for _ in range(40):  # small calls again: the sum starts afresh after the check
        by_bytes.observe(refs[1].sha256, x, y)
    assert len(by_bytes._pending) == 1000 // 28 and by_bytes.skipped == 300 - 1000 // 28 + 2 + 40 - 1000 // 28
    sampled = DriftMonitor(a, DriftSection(check_every_requests=40, sample_every_requests=4))
    woke = []
    sampled._wake = type("W", (), {"set": lambda self: woke.append(len(sampled._pending))})()
    sampled.attach()
    for _ in range(100):  # what the agent runs after each successful inference
        a.tap_tensors(refs[1].sha256, x, y)
    sampled.detach()
    assert len(sampled._pending) == 25 and woke == [10, 20]  # one in 4 handed over; due every 40 requests
    assert a._tensor_every == 1  # detached: every call again
    a.switch_to(refs[3].sha256)  # packaged from 16 samples: no baseline
    assert a.current().info.drift is None
    m.check()
    assert m.latest is None


def test_pending_bytes_are_summed_over_every_kept_call_not_sized_by_the_first():
    """A small first call after a check does not let large ones through: the bytes kept never
    exceed max_pending_bytes, whatever the order of sizes (agent-free: the observer alone)."""
    m = DriftMonitor(agent=None, config=DriftSection(max_pending_bytes=1 << 20, max_pending_requests=1000))
    small, y = {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 3), np.float32)}  # 28 bytes
    big = {"x": np.zeros((1024, 64), np.float32)}                                         # 256 KiB + 12
    m.observe("a", small, y)
    for _ in range(20):
        m.observe("a", big, y)
    kept = sum(f["x"].nbytes + o["y"].nbytes for _, f, o in m._pending)
    assert kept <= 1 << 20 and len(m._pending) == 1 + 3 and m.skipped == 17
    for _ in range(40):  # small calls still fit in what the big ones left
        m.observe("a", small, y)
    kept = sum(f["x"].nbytes + o["y"].nbytes for _, f, o in m._pending)
    assert kept <= 1 << 20 and len(m._pending) == 4 + 40 and m.skipped == 17
    m.observe("a", {"x": np.zeros((1 << 18) + 1, np.float32)}, {})  # alone over the limit: never kept
    assert len(m._pending) == 44 and m.skipped == 18


def test_drift_section_is_strict():
    with pytest.raises(ConfigError, match="check_every_requests"):
        parse_config({"drift": {"check_every_requests": 0}})
    with pytest.raises(ConfigError, match="unknown"):
        parse_config({"drift": {"psi": 0.1}})
    assert parse_config({"drift": {"psi_threshold": 0.1}}).section("drift").psi_threshold == 0.1
