"""The pure parts of rollouts: the plan's checks, wave cuts, and the sequential model-health
test (it does not judge on too little data, it finds a real regression, and looking at
every tick does not inflate false alarms on a healthy release)."""

from __future__ import annotations

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
           ({"size": 1, "on_model_regression": "panic"}, "choose one of")]
    for wave, needle in bad:
        with pytest.raises(BadInputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            build({"fleet": "f", "model": "m", "release": 2, "target": {"group": "g"}, "wave": [wave]}, {}, where="t")
    for data, needle in (({"fleet": "f", "model": "m", "release": 2}, "exactly one of"),
                         ({"fleet": "f", "model": "m", "release": 0, "target": {"group": "g"}}, "release must be"),
                         ({"fleet": "a/b", "model": "m", "release": 1, "target": {"group": "g"}}, "topic level"),
                         ({"fleet": "f", "model": "m", "release": 1, "target": {"devices": []}}, "targets nobody")):
        with pytest.raises(BadInputError, match=needle):
            build(data, {}, where="t")
