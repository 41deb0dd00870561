"""Latency statistics: pure functions from samples (seconds) to values. numpy + stdlib only.

Conventions (documented in docs/bench.md):
- Percentiles use numpy's default ``linear`` interpolation (type 7), so anyone can recompute
  them from the raw samples with ``np.percentile``.
- No outlier trimming, ever: the tail is the point of a latency benchmark.
- A percentile is only reported when the sample count suffices to bound it at 99% confidence,
  using MLPerf LoadGen's early-stopping rule with one over-latency sample allowed: the
  smallest ``n`` with ``P(Binomial(n, 1 - q) <= 1) <= 0.01``. That gives 64 for p90 and 662
  for p99. Otherwise the value is ``None`` and reports print "insufficient samples".
- Confidence intervals for p50/p90 are distribution-free order-statistic intervals: the
  ranks ``l < u`` around ``n*q`` such that ``P(X_(l) <= Q_q <= X_(u)) >= level`` under the
  binomial law of the count of samples below the true quantile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..percentile import percentile

#: percentiles every summary carries (p50 is the primary figure)
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: confidence used for sample sufficiency (LoadGen uses 0.99)
SUFFICIENCY_CONFIDENCE = 0.99
#: coverage of the order-statistic confidence intervals
CI_LEVEL = 0.95


def _log_binom_pmf(n: int, p: float) -> np.ndarray:
    """log P(B = k) for k = 0..n, B ~ Binomial(n, p), computed stably in log space."""
    k = np.arange(n + 1, dtype=np.float64)
    # log C(n, k) via cumulative sums of log((n - k + 1) / k)
    steps = np.log(np.arange(n, 0, -1, dtype=np.float64)) - np.log(np.arange(1, n + 1, dtype=np.float64))
    log_c = np.concatenate([[0.0], np.cumsum(steps)])
    with np.errstate(divide="ignore"):
        return log_c + k * math.log(p) + (n - k) * math.log1p(-p)


def binom_cdf(x: int, n: int, p: float) -> float:
    """P(B <= x) for B ~ Binomial(n, p)."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    return float(np.exp(_log_binom_pmf(n, p)[: x + 1]).sum())


def min_samples_for_percentile(q: float, *, confidence: float = SUFFICIENCY_CONFIDENCE,
                               tolerated_overlatency: int = 1) -> int:
    """Fewest samples for which percentile ``q`` (0-100) is bounded at ``confidence``.

    LoadGen early-stopping rule: smallest n with ``P(Binomial(n, 1-q/100) <= t) <= 1-confidence``.
    p50 -> 11, p90 -> 64, p95 -> 130, p99 -> 662.

    Raises:
        ValueError: q outside (0, 100).
    """
    if not 0 < q < 100:
        raise ValueError(f"percentile must be in (0, 100), got {q}")
    tail = 1.0 - q / 100.0
    alpha = 1.0 - confidence
    n = tolerated_overlatency + 1
    # P(B <= t) decreases monotonically in n: a doubling search then bisection
    hi = n
    while binom_cdf(tolerated_overlatency, hi, tail) > alpha:
        hi *= 2
    lo = max(n, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if binom_cdf(tolerated_overlatency, mid, tail) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo


#: precomputed for the percentiles we report
MIN_SAMPLES: dict[int, int] = {q: min_samples_for_percentile(q) for q in PERCENTILES}


def quantile_ci(sorted_samples: np.ndarray, q: float, *, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Distribution-free CI for percentile ``q`` (0-100) from order statistics.

    Returns ``(low, high)`` or ``None`` when ``n`` is too small for any pair of ranks to reach
    ``level`` coverage.
    """
    n = len(sorted_samples)
    if n < 2:
        return None
    p = q / 100.0
    cdf = np.cumsum(np.exp(_log_binom_pmf(n, p)))  # cdf[k] = P(B <= k)
    alpha = (1.0 - level) / 2.0
    # lower rank l (1-based): largest l with P(B <= l-1) <= alpha
    # upper rank u (1-based): smallest u with P(B <= u-1) >= 1 - alpha
    lows = np.nonzero(cdf <= alpha)[0]
    highs = np.nonzero(cdf >= 1.0 - alpha)[0]
    if len(lows) == 0 or len(highs) == 0:
        return None
    l_rank = int(lows[-1]) + 1
    u_rank = int(highs[0]) + 1
    if u_rank > n:
        return None
    return float(sorted_samples[l_rank - 1]), float(sorted_samples[u_rank - 1])


@dataclass(frozen=True)
class LatencySummary:
    """Steady-state statistics of one cell (all latencies in seconds)."""

    count: int
    duration_s: float
    mean_s: float
    std_s: float
    cv: float
    min_s: float
    max_s: float
    percentiles_s: dict[int, float | None]  # None = insufficient samples
    ci_s: dict[int, tuple[float, float] | None]  # p50, p90 order-statistic CIs
    throughput_per_s: float  # inferences (samples, i.e. batch items) per second

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count, "duration_s": self.duration_s, "mean_s": self.mean_s,
            "std_s": self.std_s, "cv": self.cv, "min_s": self.min_s, "max_s": self.max_s,
            "percentiles_s": {f"p{q}": v for q, v in self.percentiles_s.items()},
            "ci_s": {f"p{q}": (list(v) if v is not None else None) for q, v in self.ci_s.items()},
            "ci_level": CI_LEVEL,
            "min_samples": {f"p{q}": MIN_SAMPLES[q] for q in self.percentiles_s},
            "throughput_per_s": self.throughput_per_s,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LatencySummary":
        return cls(
            count=int(d["count"]), duration_s=float(d["duration_s"]), mean_s=float(d["mean_s"]),
            std_s=float(d["std_s"]), cv=float(d["cv"]), min_s=float(d["min_s"]), max_s=float(d["max_s"]),
            percentiles_s={int(k[1:]): v for k, v in d["percentiles_s"].items()},
            ci_s={int(k[1:]): (tuple(v) if v is not None else None) for k, v in d["ci_s"].items()},
            throughput_per_s=float(d["throughput_per_s"]),
        )


def summarize(samples_s: Sequence[float] | np.ndarray, *, wall_s: float | None = None,
              items_per_call: int = 1) -> LatencySummary:
    """Summarize per-call latencies (seconds).

    ``wall_s`` is the wall time of the measured phase (defaults to the sum of samples, which
    is right for a single stream); throughput = ``count * items_per_call / wall_s``.

    Raises:
        ValueError: no samples, or non-finite/negative samples.
    """
    a = np.asarray(samples_s, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples to summarize")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("latency samples must be finite and non-negative")
    s = np.sort(a)
    n = int(s.size)
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if n > 1 else 0.0
    wall = float(wall_s) if wall_s is not None else float(s.sum())
    pct: dict[int, float | None] = {}
    for q in PERCENTILES:
        pct[q] = percentile(s, q) if n >= MIN_SAMPLES[q] else None
    ci = {q: (quantile_ci(s, q) if pct[q] is not None else None) for q in (50, 90)}
    return LatencySummary(
        count=n, duration_s=wall, mean_s=mean, std_s=std, cv=(std / mean if mean > 0 else 0.0),
        min_s=float(s[0]), max_s=float(s[-1]), percentiles_s=pct, ci_s=ci,
        throughput_per_s=(n * items_per_call / wall if wall > 0 else 0.0),
    )


def drift(samples_s: Sequence[float] | np.ndarray, *, windows: int = 4) -> float | None:
    """Relative change of the last window's median against the first (throttling check).

    Returns None when there are fewer than ``8 * windows`` samples.
    """
    a = np.asarray(samples_s, dtype=np.float64)
    if a.size < 8 * windows:
        return None
    parts = np.array_split(a, windows)
    first, last = float(np.median(parts[0])), float(np.median(parts[-1]))
    return (last - first) / first if first > 0 else None
