"""Statistics on known samples: percentiles vs numpy, sufficiency rules, order-statistic CIs."""

import numpy as np
import pytest

from runtime.bench.stats import (MIN_SAMPLES, binom_cdf, drift, min_samples_for_percentile, quantile_ci,
                                 summarize)


def test_loadgen_sufficiency_minima():
    assert MIN_SAMPLES[90] == 64
    assert MIN_SAMPLES[99] == 662
    assert min_samples_for_percentile(50) < MIN_SAMPLES[90] < MIN_SAMPLES[95] < MIN_SAMPLES[99]
    # the rule itself: at n the bound holds, at n-1 it does not
    for q, n in ((90, 64), (99, 662)):
        assert binom_cdf(1, n, 1 - q / 100) <= 0.01 < binom_cdf(1, n - 1, 1 - q / 100)


def test_binom_cdf_matches_direct_sum():
    from math import comb

    n, p = 30, 0.1
    direct = sum(comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(4))
    assert binom_cdf(3, n, p) == pytest.approx(direct, rel=1e-9)


def test_percentiles_match_numpy_and_nothing_is_trimmed():
    rng = np.random.default_rng(0)
    s = rng.lognormal(0, 1, 2000)
    s[17] = 1e3  # a huge outlier stays in
    summ = summarize(s)
    for q in (50, 90, 95, 99):
        assert summ.percentiles_s[q] == pytest.approx(np.percentile(s, q), rel=1e-12)
    assert summ.max_s == 1e3 and summ.min_s == s.min()
    assert summ.mean_s == pytest.approx(s.mean())
    assert summ.std_s == pytest.approx(s.std(ddof=1))
    assert summ.cv == pytest.approx(s.std(ddof=1) / s.mean())
    assert summ.count == 2000


def test_insufficient_samples_are_none_not_numbers():
    s = np.linspace(1, 2, 63)
    summ = summarize(s)
    assert summ.percentiles_s[50] is not None
    assert summ.percentiles_s[90] is None and summ.percentiles_s[99] is None
    assert summ.ci_s[90] is None
    summ64 = summarize(np.linspace(1, 2, 64))
    assert summ64.percentiles_s[90] is not None and summ64.percentiles_s[99] is None
    assert summarize(np.linspace(1, 2, 662)).percentiles_s[99] is not None
    assert summarize(np.linspace(1, 2, 661)).percentiles_s[99] is None


def test_throughput_uses_wall_time_and_batch():
    summ = summarize([0.01] * 100, wall_s=2.0, items_per_call=4)
    assert summ.throughput_per_s == pytest.approx(200.0)
    assert summarize([0.01] * 100).throughput_per_s == pytest.approx(100.0)


def test_ci_brackets_the_estimate_and_covers_the_true_quantile():
    rng = np.random.default_rng(1)
    hits = {50: 0, 90: 0}
    trials = 300
    for _ in range(trials):
        s = np.sort(rng.uniform(0, 1, 200))
        for q in hits:
            lo, hi = quantile_ci(s, q)
            assert lo <= np.percentile(s, q) <= hi
            hits[q] += lo <= q / 100 <= hi
    for q, h in hits.items():  # nominal 95%; order-statistic intervals are conservative
        assert h / trials >= 0.92, (q, h)


def test_ci_none_when_too_few_samples():
    assert quantile_ci(np.array([1.0, 2.0, 3.0]), 50) is None
    assert quantile_ci(np.array([1.0]), 50) is None


def test_summary_json_round_trip():
    summ = summarize(np.random.default_rng(2).exponential(1, 700))
    from runtime.bench.stats import LatencySummary

    again = LatencySummary.from_json(summ.to_json())
    assert again == summ


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [-1.0, 2.0]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_drift_detects_a_slowing_run():
    flat = np.ones(400)
    slowing = np.concatenate([np.ones(200), np.full(200, 1.5)])
    assert drift(flat) == pytest.approx(0.0)
    assert drift(slowing) == pytest.approx(0.5)
    assert drift(np.ones(10)) is None
