"""Verdicts of the benchmark scripts: targets, noise guards and the exit code, in one place.

Every script in ``benchmarks/`` states its targets as :class:`Target` values at the top,
measures, then hands the figures to :meth:`Report.judge` and exits with
:meth:`Report.exit_code`. The rules (pure, tested in ``tests/benchmarks``):

- A figure is measured over several rounds (``min_rounds``, default 3). Its *interval* is
  the interval the script passes (e.g. a confidence interval on a paired difference) or
  else the spread of the rounds: their range for up to 5 rounds, the 95% order-statistic
  interval of the median (``runtime.bench.stats.quantile_ci``) above that.
- PASS when the whole interval meets the target; FAIL when the whole interval misses it;
  INCONCLUSIVE when the interval straddles the target ("spread"), when there are too few
  rounds, when the machine was busy with other work during the run and load could explain
  the verdict (:attr:`Target.load`: a latency that passes under load stands, one that fails
  does not; a rate that passes under load stands too; a ratio gets no verdict under load;
  "busy" is the load average above the core count, or, for a script that keeps every core
  busy itself, other processes' CPU time: ``_load_monitor``), or when a sanity check refuses a
  verdict because the data contradict themselves (:func:`slower_with_more_threads`,
  :func:`baseline_exceeds_bound`). Exact figures (counts of failed requests) are judged
  on their value alone.
- Every figure is printed with its median, its spread and the load during its run.
- Exit code: 1 when any figure FAILs, else 3 when any is INCONCLUSIVE, else 0.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from _load_monitor import AnyLoad, CpuLoad, CpuMonitor, Load, LoadMonitor, worst  # noqa: F401  (one import for the scripts)

#: below this many rounds a noisy figure has no spread to judge by
MIN_ROUNDS = 3
#: up to this many rounds the interval is the range of the rounds
RANGE_ROUNDS = 5


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "inconclusive"


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda v, lim: v < lim, "<=": lambda v, lim: v <= lim,
    ">": lambda v, lim: v > lim, ">=": lambda v, lim: v >= lim,
}


@dataclass(frozen=True)
class Target:
    """A figure and the limit it must meet, e.g. ``Target("idle RSS", "<=", 120, "MB")``.

    ``scale`` converts the measured unit into the printed one (1e3 for seconds shown in ms).
    ``load`` says what other work on the machine can do to the figure: ``"up"`` it can only
    raise it (a latency, a duration: a PASS measured under load stands, a FAIL does not),
    ``"down"`` it can only lower it (a throughput, a rate: a PASS under load stands),
    ``"either"`` it can move it both ways (ratios, overheads, speedups: no verdict under load),
    ``"none"`` it cannot (memory, sizes, counts).
    """

    name: str
    op: str
    limit: float
    unit: str = ""
    fmt: str = ".3g"
    scale: float = 1.0
    load: str = "either"

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"target {self.name!r}: op must be one of {sorted(_OPS)}, got {self.op!r}")
        if self.load not in ("up", "down", "either", "none"):
            raise ValueError(f"target {self.name!r}: load must be up, down, either or none, got {self.load!r}")

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    def show(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value * self.scale:{self.fmt}}"

    def text(self) -> str:
        return f"{self.op} {self.limit * self.scale:{self.fmt}}{(' ' + self.unit) if self.unit else ''}"


# ------------------------------------------------------------------ statistics (pure)
def spread(values: Sequence[float]) -> tuple[float, float] | None:
    """The interval a set of rounds gives: their range (<= 5 rounds) or the 95%
    order-statistic interval of their median. None for fewer than 2 rounds."""
    from runtime.bench.stats import quantile_ci

    a = np.sort(np.asarray(values, dtype=np.float64))
    if a.size < 2:
        return None
    if a.size <= RANGE_ROUNDS:
        return float(a[0]), float(a[-1])
    ci = quantile_ci(a, 50)
    return ci if ci is not None else (float(a[0]), float(a[-1]))


def bootstrap_mean_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 4000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile-bootstrap interval of the mean (seeded, distribution-free).

    Raises:
        ValueError: fewer than 2 values.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size < 2:
        raise ValueError("a confidence interval needs at least 2 values")
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(a.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def paired_ratio_ci(candidate: Sequence[float], baseline: Sequence[float], *, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """Relative difference candidate/baseline - 1 over paired rounds, as (estimate, low, high).

    Round ``i`` of each side ran back to back, so load drift between rounds cancels in the
    pair. The estimate is the geometric mean ratio (mean of per-round log ratios) with a
    bootstrap interval on that mean.

    Raises:
        ValueError: unequal lengths, fewer than 2 rounds, or a non-positive time.
    """
    c, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape:
        raise ValueError(f"paired rounds differ in number: {c.size} vs {b.size}")
    if np.any(c <= 0) or np.any(b <= 0):
        raise ValueError("paired times must be positive")
    m, lo, hi = bootstrap_mean_ci(np.log(c / b), level=level, seed=seed)
    return math.expm1(m), math.expm1(lo), math.expm1(hi)


def interleaved_rounds(variants: dict[str, Callable[[], object]], *, rounds: int, calls: int,
                       seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Many short paired rounds: in each round every variant runs ``calls`` times back to back,
    the variants in a fresh random order, so round ``i`` of each variant shares its moment (and
    its background load) with the others. Returns, per variant, the per-round median ``wall``
    and ``cpu`` (this thread's CPU time, ``time.thread_time_ns``) seconds per call."""
    import random

    names = list(variants)
    rng = random.Random(seed)
    out = {k: {"wall": np.empty(rounds), "cpu": np.empty(rounds)} for k in names}
    wall_ns, cpu_ns = time.perf_counter_ns, time.thread_time_ns
    w, c = np.empty(calls), np.empty(calls)
    for r in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for k in order:
            fn = variants[k]
            for j in range(calls):
                a, b = wall_ns(), cpu_ns()
                fn()
                c[j], w[j] = cpu_ns() - b, wall_ns() - a
            out[k]["wall"][r] = np.median(w) / 1e9
            out[k]["cpu"][r] = np.median(c) / 1e9
    return out


# ------------------------------------------------------------------ sanity checks (pure)
def slower_with_more_threads(p50_by_threads: dict[int, float], *, tolerance: float = 0.05,
                             what: str = "the model") -> str | None:
    """A reason to refuse when more threads ran slower than fewer on a compute-bound model
    (only a busy machine does that), else None."""
    ts = sorted(p50_by_threads)
    for lo, hi in zip(ts, ts[1:]):
        a, b = p50_by_threads[lo], p50_by_threads[hi]
        if b > a * (1.0 + tolerance):
            return (f"{hi} threads slower than {lo} on {what} ({b * 1e3:.3g} vs {a * 1e3:.3g} ms): "
                    "a compute-bound model does not do that on an idle machine")
    return None


def baseline_exceeds_bound(baseline: float, bounded: float, *, tolerance: float = 0.0,
                           what: str = "the baseline") -> str | None:
    """A reason to refuse when a baseline that can only be lower (it does a subset of the work:
    a bare engine loop under the agent, a bare process under the agent's memory) measured above
    the thing it bounds by more than ``tolerance`` (relative), else None."""
    if baseline - bounded > tolerance * abs(bounded):
        return (f"{what} measured above what it bounds ({baseline:.4g} vs {bounded:.4g}): "
                "the data contradict themselves (noise or load)")
    return None


# ------------------------------------------------------------------ verdicts
@dataclass(frozen=True)
class Row:
    """One printed figure. ``verdict`` None marks an informational figure (no target)."""

    target: Target
    values: tuple[float, ...]
    interval: tuple[float, float] | None
    verdict: Verdict | None
    reason: str | None
    load: AnyLoad | None
    note: str = ""

    @property
    def median(self) -> float | None:
        return float(np.median(self.values)) if self.values else None

    def line(self) -> str:
        t = self.target
        unit = f" {t.unit}" if t.unit else ""
        fig = f"{t.show(self.median)}{unit}"
        if self.interval is not None:
            fig += f" [{t.show(self.interval[0])} .. {t.show(self.interval[1])}]"
        n = len(self.values)
        if n > 1:
            fig += f" ({n} rounds)"
        head = self.verdict.value if self.verdict else "info"
        parts = [f"{head:<12} {t.name:<52} {fig}"]
        if self.verdict is not None:
            parts.append(f"target {t.text()}")
        if self.load is not None:
            parts.append(self.load.text())
        if self.note:
            parts.append(self.note)
        if self.reason:
            parts.append(f"reason: {self.reason}")
        return "   ".join(parts)


def _values(values) -> tuple[float, ...]:
    if values is None:
        return ()
    if isinstance(values, (int, float)):
        return (float(values),)
    return tuple(float("nan") if v is None else float(v) for v in values)


def judge(target: Target, values: Sequence[float] | float, *, interval: tuple[float, float] | None = None,
          exact: bool = False, refuse: Sequence[str | None] = (), load: AnyLoad | None = None,
          min_rounds: int = MIN_ROUNDS, note: str = "") -> Row:
    """The verdict on one figure (pure). See the module docstring for the rules."""
    vals = _values(values)
    if not vals or any(math.isnan(v) for v in vals):
        return Row(target, vals, None, Verdict.INCONCLUSIVE, "not measured", load, note)
    if exact:
        iv = None
        lo = hi = float(np.median(vals))
    else:
        iv = interval if interval is not None else spread(vals)
        lo, hi = iv if iv is not None else (vals[0], vals[0])
    reasons = [r for r in refuse if r]
    if not exact and interval is None and len(vals) < min_rounds:
        reasons.append(f"{len(vals)} round(s): too few to know the spread (need >= {min_rounds})")
    ok_lo, ok_hi = target.met(lo), target.met(hi)
    if ok_lo != ok_hi:
        reasons.append(f"spread [{target.show(lo)} .. {target.show(hi)}] straddles the target")
    verdict = Verdict.PASS if ok_lo else Verdict.FAIL
    busy = not exact and load is not None and load.over
    if busy and (reasons or _load_could_explain(target, verdict)):
        reasons.append(load.why())
    if reasons:
        return Row(target, vals, iv, Verdict.INCONCLUSIVE, "; ".join(reasons), load, note)
    return Row(target, vals, iv, verdict, None, load, note)


def _load_could_explain(target: Target, verdict: Verdict) -> bool:
    """Whether other work on the machine could have produced this verdict."""
    if target.load == "none":
        return False
    if target.load == "either":
        return True
    # "up"/"down": load moves the figure one way, so it explains the verdict that way gives
    load_makes_worse = (target.load == "up") == (target.op in ("<", "<="))
    return (verdict is Verdict.FAIL) == load_makes_worse


@dataclass
class Report:
    """The verdict rows of one script run, printed together, and the exit code they give."""

    title: str = ""
    rows: list[Row] = field(default_factory=list)

    def judge(self, target: Target, values, **kw) -> Row:
        row = judge(target, values, **kw)
        self.rows.append(row)
        return row

    def info(self, name: str, values, **kw) -> Row:
        """A figure without a target (see :func:`info`), added to the report."""
        row = info(name, values, **kw)
        self.rows.append(row)
        return row

    def lines(self) -> list[str]:
        out = [self.title] if self.title else []
        out += [r.line() for r in self.rows]
        out.append(summary(self.rows))
        return out

    def print(self) -> None:
        print("\n".join(self.lines()), flush=True)

    def exit_code(self) -> int:
        return exit_code(self.rows)


def info(name: str, values, *, unit: str = "", fmt: str = ".3g", scale: float = 1.0,
         interval: tuple[float, float] | None = None, load: AnyLoad | None = None, note: str = "") -> Row:
    """A figure without a target: printed with its spread and load, never judged (pure)."""
    vals = _values(values)
    return Row(Target(name, "<", math.inf, unit, fmt, scale), vals,
               interval if interval is not None else spread(vals), None, None, load, note)


def exit_code(rows: Sequence[Row]) -> int:
    """1 when any figure failed, else 3 when any was inconclusive or nothing was judged, else 0."""
    verdicts = [r.verdict for r in rows if r.verdict is not None]
    if Verdict.FAIL in verdicts:
        return 1
    if Verdict.INCONCLUSIVE in verdicts or not verdicts:
        return 3
    return 0


def summary(rows: Sequence[Row]) -> str:
    judged = [r for r in rows if r.verdict is not None]
    n = {v: sum(r.verdict is v for r in judged) for v in Verdict}
    code = exit_code(rows)
    word = {0: "all targets met", 1: "a target was missed", 3: "not every figure could be resolved"}[code]
    if not judged:
        word = "nothing was judged"
    return (f"verdict: {n[Verdict.PASS]} PASS, {n[Verdict.FAIL]} FAIL, {n[Verdict.INCONCLUSIVE]} inconclusive "
            f"-> {word} (exit {code})")
