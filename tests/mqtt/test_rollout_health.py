"""The pure parts of rollouts: the plan's checks, wave cuts, and the sequential model-health
test (it does not judge on too little data, it finds a real regression, and looking at
every tick does not inflate false alarms on a healthy release)."""

from __future__ import annotations

import json
import math
import random

import pytest

from toolchain.errors import BadInputError
from toolchain.fleet.rollout.health import CohortStats, install_verdict, model_verdict
from toolchain.fleet.rollout.plan import Criteria, build

C = Criteria(min_requests=500, min_device_s=60, min_windows=10, max_error_rate_delta=0.01, max_p95_ratio=1.3)


def _cohort(rng, *, windows, p95_ms, err, rps=20, window_s=2.0, sigma=0.08):
    c = CohortStats()
    for _ in range(windows):
        n = rng.randint(int(rps * window_s * 0.8), int(rps * window_s * 1.2))
        c.add_window(requests=n, errors=sum(rng.random() < err for _ in range(n)), window_s=window_s,
                     p95_ms=p95_ms * math.exp(rng.gauss(0, sigma)))
    return c


def test_model_health_waits_for_data_then_finds_a_regression():
    rng = random.Random(1)
    control = _cohort(rng, windows=400, p95_ms=9, err=0.002)
    v = model_verdict(_cohort(rng, windows=3, p95_ms=30, err=0.5), control, C, final=True)
    assert v.state == "collecting" and "not enough data" in v.reasons[0]      # a tiny wave is not judged
    v = model_verdict(_cohort(rng, windows=40, p95_ms=18, err=0.002), control, C, final=False)
    assert v.state == "breach" and "p95 latency x" in v.reasons[0] and v.values["p95"]["ratio"] > 1.8
    v = model_verdict(_cohort(rng, windows=40, p95_ms=9, err=0.08), control, C, final=False)
    assert v.state == "breach" and "error rate" in v.reasons[0]
    v = model_verdict(_cohort(rng, windows=40, p95_ms=9.5, err=0.003), control, C, final=True)
    assert v.state == "ok", v.reasons


def test_interim_looks_do_not_inflate_false_alarms():
    """200 healthy waves (new == control), 20 interim looks each plus the final one."""
    rng = random.Random(7)
    alarms = 0
    for _ in range(200):
        control = _cohort(rng, windows=200, p95_ms=9, err=0.01)
        new = CohortStats()
        breached = False
        for look in range(20):
            part = _cohort(rng, windows=3, p95_ms=9 * 1.25, err=0.01)   # slower, but within the 1.3 margin
            for k in ("requests", "errors", "device_s", "windows", "log_p95_sum", "log_p95_sq"):
                setattr(new, k, getattr(new, k) + getattr(part, k))
            breached |= model_verdict(new, control, C, final=look == 19).state == "breach"
        alarms += breached
    assert alarms / 200 < 0.10, alarms


def test_install_verdict_needs_a_minimum_sample():
    c = Criteria(min_sample=5, max_failure_pct=20, min_success_pct=90)
    assert install_verdict(size=50, committed=0, failed=4, failed_since_ack=4, results_since_ack=4, c=c,
                           settled=False).state == "collecting"
    v = install_verdict(size=50, committed=3, failed=2, failed_since_ack=2, results_since_ack=5, c=c, settled=False)
    assert v.state == "breach" and "2/5" in v.reasons[0]
    v = install_verdict(size=10, committed=8, failed=0, failed_since_ack=0, results_since_ack=0, c=c, settled=True)
    assert v.state == "breach" and "8/10 committed" in v.reasons[0]


def test_plan_waves_and_checks():
    plan = build({"fleet": "f", "model": "m", "release": 2, "target": {"group": "g"},
                  "wave": [{"size": 1}, {"size": "10%", "bake_s": 5}, {"size": "rest"}]}, {}, where="t")
    from toolchain.fleet.rollout.cohort import assign_waves

    waves = assign_waves(plan, [f"d{i}" for i in range(25)])
    assert [len(w) for w in waves] == [1, 3, 21] and sorted(sum(waves, [])) == sorted(f"d{i}" for i in range(25))
    assert assign_waves(plan, [f"d{i}" for i in range(25)]) == waves            # stable: a resume agrees
    assert plan.waves[1].criteria.bake_s == 5 and plan.waves[0].criteria.bake_s == 600
    assert type(plan).from_json(plan.to_json()) == plan
    bad = [({"size": 0}, "at least 1 device"), ({"size": "0%"}, "(0, 100]"), ({"size": 1, "max_p95_ratio": 0.9}, ">= 1"),
           ({"size": 1, "min_success_pct": -1}, "between 0 and 100"), ({"size": 1, "bake": 3}, "unknown criteria"),
           ({"size": 1, "on_model_regression": "panic"}, "choose one of"),
           ({"size": 1, "max_drift_alarm_share_delta": 1.5}, "turns the drift criterion off"),
           ({"size": 1, "min_drift_devices": 0}, "min_drift_devices must be >= 1")]
    for wave, needle in bad:
        with pytest.raises(BadInputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            build({"fleet": "f", "model": "m", "release": 2, "target": {"group": "g"}, "wave": [wave]}, {}, where="t")
    for data, needle in (({"fleet": "f", "model": "m", "release": 2}, "exactly one of"),
                         ({"fleet": "f", "model": "m", "release": 0, "target": {"group": "g"}}, "release must be"),
                         ({"fleet": "a/b", "model": "m", "release": 1, "target": {"group": "g"}}, "topic level"),
                         ({"fleet": "f", "model": "m", "release": 1, "target": {"devices": []}}, "targets nobody")):
        with pytest.raises(BadInputError, match=needle):
            build(data, {}, where="t")


# ------------------------------------------------------------------ drift: share of devices alarmed
CD = Criteria(min_requests=500, min_device_s=60, min_windows=10, max_drift_alarm_share_delta=0.2, min_drift_devices=5)


def _drifting(rng, *, devices, alarmed, windows=40, psi=0.5):
    c = _cohort(rng, windows=windows, p95_ms=9, err=0.002)
    for i in range(devices):
        c.add_drift(alarmed=i < alarmed, psi_max=psi if i < alarmed else 0.02)
    return c


def test_drift_is_off_by_default_and_a_cohort_without_reports_is_not_judged_on_it():
    rng = random.Random(3)
    new, control = _drifting(rng, devices=0, alarmed=0), _drifting(rng, devices=0, alarmed=0, windows=400)
    v = model_verdict(new, control, C, final=True)                # the default plan: drift not a criterion
    assert not C.judges_drift and v.state == "ok" and "drift" not in v.values
    v = model_verdict(_drifting(rng, devices=3, alarmed=3), control, CD, final=True)
    assert v.state == "collecting" and "drift report 3/0 < 5" in v.reasons[0]


def test_drift_alarm_share_is_judged_sequentially():
    rng = random.Random(4)
    control = _drifting(rng, devices=30, alarmed=1, windows=400)
    v = model_verdict(_drifting(rng, devices=10, alarmed=10), control, CD, final=False)
    assert v.state == "breach" and v.breached == ["drift"] and "drift alarms on 10/10 devices" in v.reasons[0]
    assert v.values["drift"]["new"] == 1.0 and v.values["drift"]["psi_max_mean"]["new"] == 0.5
    # a clear excess on few devices: not at an interim look (z > 3.09), at the final one (z > 1.645)
    few = _drifting(rng, devices=8, alarmed=6)
    assert model_verdict(few, control, CD, final=False).state == "ok"
    v = model_verdict(few, control, CD, final=True)
    assert v.state == "breach" and v.breached == ["drift"], v.values["drift"]
    # over the margin by a little on 6 devices (2 alarmed): not evidence; within the margin: ok
    assert model_verdict(_drifting(rng, devices=6, alarmed=2), control, CD, final=True).state == "ok"
    assert model_verdict(_drifting(rng, devices=20, alarmed=3), control, CD, final=True).state == "ok"


def test_drift_interim_looks_do_not_inflate_false_alarms():
    """200 healthy waves: 5% of the devices of either cohort alarm by chance; the new cohort
    grows by 2 devices a look over 20 looks plus the final one."""
    rng = random.Random(9)
    alarms = 0
    for _ in range(200):
        control = _drifting(rng, devices=0, alarmed=0, windows=400)
        for _ in range(40):
            control.add_drift(alarmed=rng.random() < 0.05, psi_max=0.02)
        new = _drifting(rng, devices=0, alarmed=0)
        breached = False
        for look in range(20):
            for _ in range(2):
                new.add_drift(alarmed=rng.random() < 0.05, psi_max=0.02)
            if new.drift_devices >= CD.min_drift_devices:
                breached |= "drift" in model_verdict(new, control, CD, final=look == 19).breached
        alarms += breached
    assert alarms / 200 < 0.10, alarms


def test_plan_drift_key_turns_the_criterion_on():
    plan = build({"fleet": "f", "model": "m", "release": 2, "target": {"group": "g"},
                  "criteria": {"max_drift_alarm_share_delta": 0.1}}, {}, where="t")
    assert plan.waves[0].criteria.judges_drift and type(plan).from_json(plan.to_json()) == plan


def test_fleet_view_counts_each_devices_latest_drift_report_for_the_release_it_serves():
    """Devices' real ``telemetry/drift`` documents (the contract's builder and envelope): a report
    of the release a device ran before is not counted for it, nor one from before the epoch; a
    garbage report marks the device invalid."""
    from runtime.contracts.mqtt import payloads
    from runtime.contracts.mqtt.messages import Kind
    from runtime.contracts.mqtt.payloads import Origin
    from runtime.contracts.mqtt.telemetry import drift_report
    from toolchain.fleet.rollout.observe import FleetView

    view = FleetView(prefix="edgeship", fleet="f", model="m", release=2, deployments=set())
    view.targets = {"a", "b", "c"}
    view.reset_epoch(1000)
    model = {"name": "m", "version": "1", "sha256": "x"}

    def send(device, leaf, kind, body, ts=2000):
        doc = payloads.envelope(kind, Origin(fleet="f", device=device, boot_id="b", msg_id=1, ts_ms=ts, mono_ms=1), body)
        view.feed(f"edgeship/f/{device}/{leaf}", payloads.encode(doc).encode())

    def reported(device, release):
        send(device, "reported", Kind.REPORTED, {"applied_version": 1, "active": {"name": "m", "release": release}})

    def drift(device, release, alarms, ts=2000):
        send(device, "telemetry/drift", Kind.DRIFT, drift_report({
            "model": {**model, "release": release}, "checks": 3, "window_samples": 500,
            "scores": [{"name": "x", "kind": "input", "samples": 500, "psi": 0.6 if alarms else 0.01}],
            "alarms": ["drift.psi:input:x"] if alarms else []}), ts=ts)

    for d in "abc":
        reported(d, 1)
    drift("a", 1, alarms=False)
    drift("b", 1, alarms=True)
    drift("c", 1, alarms=True, ts=500)                       # before the epoch
    assert (view.control.drift_devices, view.control.drift_alarmed, view.new.drift_devices) == (2, 1, 0)
    reported("b", 2)                                          # b switched; its report is release 1's
    assert (view.control.drift_devices, view.new.drift_devices) == (1, 0)
    drift("b", 2, alarms=True)
    assert (view.new.drift_devices, view.new.drift_alarmed, view.new.drift_psi_max_sum) == (1, 1, 0.6)
    view.reset_epoch(3000)                                    # a resume: judged afresh
    assert view.new.drift_devices == view.control.drift_devices == 0
    view.feed("edgeship/f/a/telemetry/drift", b'{"schema": "nope"}')
    assert view.devices["a"].invalid.startswith("drift:")


def test_a_malformed_drift_report_marks_its_device_invalid_and_is_never_kept():
    """A drift document whose ts_ms is not an integer (or any field the count reads is wrong) is
    refused by the strict parser before it is kept: the device is named invalid, its last valid
    report still counts, and a resume (reset_epoch) recounts the fleet without raising."""
    from runtime.contracts.mqtt import payloads
    from runtime.contracts.mqtt.messages import Kind
    from runtime.contracts.mqtt.payloads import Origin
    from runtime.contracts.mqtt.telemetry import drift_report
    from toolchain.fleet.rollout.observe import FleetView

    view = FleetView(prefix="edgeship", fleet="f", model="m", release=2, deployments=set())
    view.targets = {"a", "b"}
    view.reset_epoch(1000)
    body = drift_report({"model": {"name": "m", "release": 2}, "alarms": ["drift.psi:input:x"],
                         "scores": [{"name": "x", "kind": "input", "samples": 500, "psi": 0.6}]})
    for d in "ab":
        rep = payloads.envelope(Kind.REPORTED, Origin(fleet="f", device=d, boot_id="b", msg_id=1, ts_ms=2000,
                                                      mono_ms=1), {"applied_version": 1, "active": {"name": "m", "release": 2}})
        view.feed(f"edgeship/f/{d}/reported", payloads.encode(rep).encode())
    good = payloads.envelope(Kind.DRIFT, Origin(fleet="f", device="a", boot_id="b", msg_id=2, ts_ms=2000, mono_ms=1), body)
    view.feed("edgeship/f/a/telemetry/drift", payloads.encode(good).encode())
    assert (view.new.drift_devices, view.new.drift_alarmed) == (1, 1)
    for d in "ab":
        bad = {"schema": Kind.DRIFT.schema, "ts_ms": "late", **body}
        view.feed(f"edgeship/f/{d}/telemetry/drift", json.dumps(bad).encode())
        assert "'ts_ms' must be an integer" in view.devices[d].invalid
    assert view.devices["b"].drift is None and view.devices["a"].drift["ts_ms"] == 2000  # a's valid one stays
    view.reset_epoch(1500)  # a resume: raised TypeError when the bad document had been kept
    assert (view.new.drift_devices, view.new.drift_alarmed, view.new.drift_psi_max_sum) == (1, 1, 0.6)
