"""The drift cost budget ([drift] max_cost_share): the pure planner (runtime/drift/schedule.py)
on measured costs, and the device's DriftMonitor on a real Agent spacing out its checks and
sketching fewer requests when they cost more than the budget, the agent handing over only
those, a model switch starting from the configured schedule again, and the schedule in the
report and on /metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from device_agent.agent import Agent
from device_agent.config import AgentConfig, parse_config
from device_agent.configfile import ConfigError
from device_agent.monitoring.drift import DriftMonitor, DriftSection
from device_agent.store import Store
from runtime.drift.schedule import AIM, MAX_CHECK_EVERY, MAX_SAMPLE_EVERY, Costs, Schedule, plan

FLOOR = Schedule(1, 100)


def test_the_configured_schedule_stands_while_it_fits_the_budget():
    slow_model = Costs(skip_s=2e-7, keep_s=2e-6, check_s=4e-4, latency_s=5e-3)  # 5 ms: drift ~0.1%
    assert plan(slow_model, 0.02, FLOOR) == FLOOR
    fast = Costs(skip_s=2e-7, keep_s=2e-6, check_s=4e-4, latency_s=3e-5)
    assert plan(fast, 0.0, FLOOR) == FLOOR  # no budget
    assert plan(Costs(2e-7, 2e-6, 4e-4, 0.0), 0.02, FLOOR) == FLOOR  # latency not known yet


def test_a_fast_model_gets_the_densest_schedule_that_fits_never_denser_than_configured():
    for skip, keep, check, lat, share, n in itertools.product(
            (5e-8, 2e-7), (1e-6, 3e-6), (2e-4, 6e-4), (2e-5, 4e-5, 1e-4), (0.01, 0.02, 0.05), (40, 80)):
        c = Costs(skip, keep, check, lat)
        s = plan(c, share, FLOOR, samples_per_check=n)
        assert s.sample_every >= FLOOR.sample_every and s.check_every >= FLOOR.check_every
        assert s.check_every % s.sample_every == 0  # a whole number of sketched requests per check
        if c.per_request(FLOOR) <= share * lat:
            assert s == FLOOR
            continue
        if s.sample_every < MAX_SAMPLE_EVERY and s.check_every < MAX_CHECK_EVERY:
            assert c.share(s) <= share * AIM * 1.0001, (c, share, s)
            denser = Schedule(s.sample_every, max(s.sample_every, s.check_every - 2 * s.sample_every))
            assert c.share(denser) > share * AIM * 0.95 or denser.check_every <= FLOOR.check_every, (c, s)
    # the count-down alone over the budget: the sparsest schedule, which still only approaches it
    assert plan(Costs(1e-6, 3e-6, 5e-4, 3e-5), 0.02, FLOOR) == Schedule(MAX_SAMPLE_EVERY, MAX_CHECK_EVERY)


def test_the_sparsest_schedule_is_never_denser_than_a_sparse_configured_one():
    """A configured schedule sparser than MAX_SAMPLE_EVERY / MAX_CHECK_EVERY that still does not
    fit the budget stays as configured: the planner's "as sparse as allowed" must not sketch or
    check more often than [drift] says."""
    sparse = Schedule(128, 2_000_000)
    countdown_over = Costs(skip_s=1e-6, keep_s=3e-6, check_s=5e-4, latency_s=3e-5)  # skip alone > budget
    assert plan(countdown_over, 0.02, sparse) == sparse
    keep_over = Costs(skip_s=1e-7, keep_s=5e-4, check_s=5e-4, latency_s=3e-5)  # one in k alone is over
    assert plan(keep_over, 0.02, Schedule(100, 200)) == Schedule(100, MAX_CHECK_EVERY)
    s = plan(Costs(2e-7, 3e-6, 5e-2, 3e-5), 0.02, Schedule(100, 2_000_000))
    assert s.sample_every >= 100 and s.check_every >= 2_000_000, s


def test_the_section_refuses_a_budget_that_is_not_a_share():
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ConfigError, match="max_cost_share"):
            parse_config({"drift": {"max_cost_share": bad}})
    assert parse_config({"drift": {"max_cost_share": 0.02}}).section("drift").max_cost_share == 0.02


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from toolchain.demo_ota import make_tiny_build
    from toolchain.package import package_build

    work = tmp_path_factory.mktemp("budget-bundles")
    return {r: package_build(make_tiny_build(work / f"b{r}", samples=300, scale=float(r)),
                             artifact_id="onnxruntime-fp32", version=f"1.{r}.0", release=r,
                             out_dir=work / "bundles", golden_samples=2) for r in (1, 2)}


def test_the_monitor_spaces_out_checks_on_a_fast_model_and_starts_afresh_on_a_switch(tmp_path, bundles):
    """The tiny model answers in tens of microseconds and a check costs hundreds: at one check
    per 20 requests drift costs far over 1%, so the monitor plans a sparser schedule, the agent
    hands the observer one call in its stride, and a new model starts from [drift] again."""
    from device_agent.monitoring.drift_publish import drift_source

    store = Store(tmp_path / "state")
    refs = {r: store.install_bundle(b.path) for r, b in bundles.items()}
    store.activate(refs[1].sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    cfg = DriftSection(check_every_requests=20, window_checks=3, min_samples=40, sustain_checks=2,
                       max_cost_share=0.01)
    m = DriftMonitor(a, cfg)
    m.attach()
    collect = drift_source(m)
    rng = np.random.default_rng(0)
    try:
        seen, since = [], 0
        for x in rng.standard_normal((6000, 4)).astype(np.float32):
            a.infer({"x": x[None]})
            since += 1
            if since >= m.schedule.check_every:  # the schedule in force, as the checker thread would
                since = 0
                m.check()
                seen.append(m.schedule)
        assert m.schedule.check_every > 20 and m.schedule.sample_every > 1, seen
        assert a._tensor_every == m.schedule.sample_every  # the agent hands over one call in the stride
        assert m.cost_share is not None and m.cost_share > 0
        assert m.check_cpu_s > 0
        sched = m.latest.to_json()["schedule"]
        assert sched == {"sample_every_requests": m.latest.schedule["sample_every_requests"],
                         "check_every_requests": m.latest.schedule["check_every_requests"],
                         "max_cost_share": 0.01, "cost_share": sched["cost_share"]}
        fams = {f.name: f for f in collect()}
        assert fams["edgeship_drift_sample_every_requests"].samples[0].value == m.schedule.sample_every
        assert fams["edgeship_drift_check_every_requests"].samples[0].value == m.schedule.check_every
        assert fams["edgeship_drift_cost_ratio"].samples[0].value == pytest.approx(m.cost_share)
        assert fams["edgeship_drift_check_cpu_seconds"].samples[0].value == pytest.approx(m.check_cpu_s)
        a.switch_to(refs[2].sha256)
        m.check()  # sees the switch: the new model's costs are not known yet
        assert m.schedule == Schedule(1, 20) and a._tensor_every == 1 and m.cost_share is None
    finally:
        m.detach()
        a.close()
    assert a._tensor_every == 1


def test_the_check_that_sees_a_switch_is_not_taken_as_the_new_models_cost(tmp_path, bundles):
    """Requests keep coming while the checker handles a switch (here: served from a listener, as
    request threads would meanwhile): that check set up the new model's sketch over the old one's
    batch, so its CPU and those few requests must not seed the new model's measured costs."""
    store = Store(tmp_path / "state")
    refs = {r: store.install_bundle(b.path) for r, b in bundles.items()}
    store.activate(refs[1].sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    m = DriftMonitor(a, DriftSection(check_every_requests=20, window_checks=3, min_samples=40,
                                     max_cost_share=0.01))
    m.attach()
    xs = np.random.default_rng(2).standard_normal((200, 4)).astype(np.float32)
    meanwhile = []
    m.add_listener(lambda report, changes: [a.infer({"x": x[None]}) for x in meanwhile])
    try:
        for i, x in enumerate(xs[:100], 1):
            a.infer({"x": x[None]})
            if i % 20 == 0:
                m.check()
        assert m.cost_share is not None
        a.switch_to(refs[2].sha256)
        for x in xs[100:120]:
            a.infer({"x": x[None]})  # the old sha's batch, as pending at the switch
        meanwhile[:] = xs[120:140]
        m.check()  # sees the switch; 20 requests of the new model arrive while it runs
        assert m.cost_share is None and not m.budget._checks, m.schedule_json()
    finally:
        m.detach()
        a.close()


def test_without_a_budget_a_costly_model_is_told_once_how_to_bound_it(tmp_path, bundles, caplog):
    import logging

    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(bundles[1].path).sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    m = DriftMonitor(a, DriftSection(check_every_requests=20, min_samples=40))
    m.attach()
    try:
        with caplog.at_level(logging.WARNING, logger="edgeship"):
            for i, x in enumerate(np.random.default_rng(1).standard_normal((400, 4)).astype(np.float32), 1):
                a.infer({"x": x[None]})
                if i % 20 == 0:
                    m.check()
        told = [r for r in caplog.records if "drift.costly" in r.getMessage()]
        assert len(told) == 1 and "max_cost_share" in told[0].fields["hint"] and told[0].fields["check_cost_share"] > 0.05
        assert m.schedule == Schedule(1, 20)  # told, not changed
    finally:
        m.detach()
        a.close()


class _PreemptedAgent:
    """An agent whose set_tensor_sampling, called off the main thread with a stride, is
    preempted just before it stores it until the main thread restores every call (or 0.5 s)."""

    def __init__(self) -> None:
        import threading

        self.every, self.observers = 1, []
        self.in_set, self.restored = threading.Event(), threading.Event()

    def add_tensor_observer(self, fn) -> None:
        self.observers.append(fn)

    def remove_tensor_observer(self, fn) -> None:
        self.observers.remove(fn)

    def set_tensor_sampling(self, every: int) -> None:
        import threading

        if every > 1 and threading.current_thread() is not threading.main_thread():
            self.in_set.set()
            self.restored.wait(0.5)
        self.every = every
        if every == 1:
            self.restored.set()


def test_a_re_plan_in_flight_cannot_leave_the_agent_sampling_after_detach():
    """The checker thread re-plans (a new stride for the agent) while stop() detaches: once
    detach returns the agent hands every call to its observers again and the monitor's is gone."""
    import threading

    agent = _PreemptedAgent()
    m = DriftMonitor(agent, DriftSection(max_cost_share=0.02))
    m.attach()
    agent.restored.clear()
    replan = threading.Thread(target=m._apply, args=(Schedule(8, 800),))  # a re-plan on the checker thread
    replan.start()
    assert agent.in_set.wait(2)
    m.detach()
    replan.join(2)
    assert agent.every == 1 and agent.observers == []


def test_the_count_down_cost_is_not_the_time_the_checker_was_kept_waiting():
    """The count-down is timed once for the monitor's life, on the checker thread while request
    threads hold the GIL and the cores: time it was descheduled (here: a 20 ms pause inside the
    loop) is not the count-down's cost, else a fast model gets the sparsest schedule for good."""
    import time

    from device_agent.agent.taps import TensorTaps
    from device_agent.monitoring.drift_budget import countdown_cost as _countdown_cost

    class Preempted(TensorTaps):
        calls = 0

        def tap_tensors(self, sha, feeds, out):
            Preempted.calls += 1
            if Preempted.calls == 1000:
                time.sleep(0.02)  # descheduled mid-measurement
            return TensorTaps.tap_tensors(self, sha, feeds, out)

    assert _countdown_cost(Preempted) < 2e-6  # a few hundred ns of CPU; the pause alone is 10 us a call


def test_the_status_line_gives_the_budget_as_set_and_when_the_cost_was_measured(tmp_path, bundles):
    """`edgeship-agent status` under a budget: the budget as configured (0.005 is 0.5%, not a
    rounded 0%), the cost measured at the last check beside the schedule in force now."""
    from device_agent.commands import _drift_line

    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(bundles[1].path).sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    m = DriftMonitor(a, DriftSection(check_every_requests=20, window_checks=3, min_samples=40, sustain_checks=2,
                                     max_cost_share=0.005))
    m.attach()
    try:
        assert _drift_line(m.status_json()).endswith(
            "every request sketched, a check every 20 requests, cost not measured yet (budget 0.5%)")
        since = 0
        for x in np.random.default_rng(3).standard_normal((3000, 4)).astype(np.float32):
            a.infer({"x": x[None]})
            since += 1
            if since >= m.schedule.check_every:
                since = 0
                m.check()
        assert m.schedule.check_every > 20 and m.cost_share is not None
        line = _drift_line(m.status_json())
        assert (f"1 request in {m.schedule.sample_every} sketched, a check every {m.schedule.check_every} requests, "
                f"cost {m.cost_share:.2%} of inference at the last check (budget 0.5%)") in line, line
    finally:
        m.detach()
        a.close()


def test_checks_from_check_interval_s_do_not_feed_the_planner_and_the_count_restarts(tmp_path, bundles):
    """Slow traffic: the checker wakes on check_interval_s with a batch far under the schedule's
    (here 5 of 20 requests); its CPU over check_every was taken as the schedule's check cost, so
    the budget planned from checks it never ran. Those checks leave the planner alone, and every
    check restarts the count-down, so the next check by count covers a whole schedule's batch."""
    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(bundles[1].path).sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    m = DriftMonitor(a, DriftSection(check_every_requests=20, window_checks=3, min_samples=40,
                                     max_cost_share=0.01))
    m.attach()
    xs = iter(np.random.default_rng(4).standard_normal((400, 4)).astype(np.float32))
    try:
        for _ in range(8):  # 5 requests per interval, well under check_every
            for _ in range(5):
                a.infer({"x": next(xs)[None]})
            m.check(by_count=False)
        assert m.latest is not None and m.latest.checks == 8  # scored and judged, not planned from
        assert m.cost_share is None and not m.budget._checks and m.schedule == Schedule(1, 20)
        for i in range(1, 21):  # the count-down restarted at the last check: due after 20 more
            a.infer({"x": next(xs)[None]})
            assert m._wake.is_set() == (i == 20), i
        m._wake.clear()
        m.check()
        assert m.cost_share is not None and len(m.budget._checks) == 1
    finally:
        m.detach()
        a.close()


def test_the_status_line_says_a_model_without_a_baseline_is_not_monitored():
    """A served bundle without a drift baseline is never sketched nor judged: status said
    "0 checks, window 0 samples, not judged yet" for good, as if a judgement were coming."""
    from types import SimpleNamespace

    from device_agent.commands import _drift_line

    ref = SimpleNamespace(sha256="ab" * 32, name="old", version="1.0.0", release=1)
    served = SimpleNamespace(ref=ref, info=SimpleNamespace(drift=None), avg_latency_s=1e-3)
    m = DriftMonitor(SimpleNamespace(current=lambda: served), DriftSection(max_cost_share=0.02))
    assert m.status_json()["no_baseline"] is False  # not seen yet
    m.check()  # sees the model: no baseline
    st = m.status_json()
    assert st["no_baseline"] is True and st["checks"] == 0
    assert _drift_line(st).startswith("not monitored: the served bundle has no drift baseline"), _drift_line(st)


def test_the_status_line_never_hides_an_active_alarm_under_min_samples():
    """The window can fall under min_samples with an alarm still active (slow traffic: checks from
    check_interval_s with few samples); the alarm stands, so the line names it, not "not judged yet"."""
    from device_agent.commands import _drift_line

    d = {"checks": 9, "window_samples": 12, "judged_from_samples": 40, "alarms": ["DRIFT_PSI:input:x"],
         "worst": {"name": "x", "kind": "input", "psi": 0.41}, "skipped_requests": 0,
         "schedule": {"sample_every_requests": 1, "check_every_requests": 20, "max_cost_share": 0, "cost_share": None}}
    assert "1 alarm(s): DRIFT_PSI:input:x" in _drift_line(d), _drift_line(d)
    assert "not judged yet" in _drift_line({**d, "alarms": []})
    assert "no alarm" in _drift_line({**d, "alarms": [], "window_samples": 40})
