"""Verdicts of the MQTT benchmarks (mqtt_throughput.py, mqtt_outage.py): targets, noise
guards and the exit code, in one place and pure (tested in tests/benchmarks).

In the spirit of the shared ``benchmarks/_verdict.py`` (written on another branch, not on main
when these scripts were): every figure is printed with its spread and the load it was measured
under; a figure that noise could have decided is "inconclusive", never PASS.

Rules:
- A ratio is measured in interleaved rounds (in round i every side runs back to back, each
  going first in turn). Its interval is the range of the per-round ratios. PASS when the whole
  interval meets the target, FAIL when the whole interval misses it; inconclusive when it
  straddles the target, with fewer than MIN_ROUNDS rounds, when a sanity check refuses (the
  data contradict themselves), or when other work used the machine: a ratio has no verdict
  under load, whichever way it went.
- Load is what *other* processes used: the CPU time of the whole machine (/proc/stat) minus
  that of the benchmark's own processes (itself, its broker, its consumer), per second of the
  round. The benchmark itself keeps about two cores busy, so the load average cannot tell
  other work from ours; it is printed too.
- A rate that load can only lower ("load up" targets): a PASS under load stands, a FAIL does not.
- Exact figures (lost messages, failed requests) are judged on their value alone.
- Exit code: 1 when any figure FAILs, else 3 when any is inconclusive, else 0.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

#: fewer rounds than this give no verdict
MIN_ROUNDS = 3
#: other processes using more than this many cores during a round make it "under load"
FOREIGN_CORES_MAX = 0.5


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "inconclusive"


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, lim: v >= lim, "<=": lambda v, lim: v <= lim,
    ">": lambda v, lim: v > lim, "<": lambda v, lim: v < lim,
}


@dataclass(frozen=True)
class Target:
    name: str
    op: str
    limit: float
    unit: str = ""
    fmt: str = ",.3g"

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"target {self.name!r}: op must be one of {sorted(_OPS)}, got {self.op!r}")

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    def show(self, value: float | None) -> str:
        return "n/a" if value is None else f"{value:{self.fmt}}"

    def text(self) -> str:
        return f"{self.op} {self.limit:{self.fmt}}{(' ' + self.unit) if self.unit else ''}"


@dataclass(frozen=True)
class Load:
    """Cores used by other processes (mean over a round) and the 1-minute load average (max)."""

    foreign_cores: float
    loadavg: float
    cores: int

    @property
    def over(self) -> bool:
        return self.foreign_cores > FOREIGN_CORES_MAX

    def text(self) -> str:
        return f"other processes {self.foreign_cores:.2f} cores, loadavg {self.loadavg:.2f} on {self.cores} cores"


def worst(loads: Sequence[Load]) -> Load | None:
    if not loads:
        return None
    return Load(max(x.foreign_cores for x in loads), max(x.loadavg for x in loads), loads[0].cores)


@dataclass(frozen=True)
class Row:
    """One printed figure; ``verdict`` None marks an informational figure (no target)."""

    target: Target
    values: tuple[float, ...]
    verdict: Verdict | None
    reason: str | None = None
    load: Load | None = None

    @property
    def median(self) -> float | None:
        if not self.values:
            return None
        v = sorted(self.values)
        n = len(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

    def line(self) -> str:
        t = self.target
        fig = t.show(self.median) + (f" {t.unit}" if t.unit else "")
        if len(self.values) > 1:
            fig += f" [{t.show(min(self.values))} .. {t.show(max(self.values))}] ({len(self.values)} rounds)"
        parts = [f"{self.verdict.value if self.verdict else 'info':<12} {t.name:<58} {fig}"]
        if self.verdict is not None:
            parts.append(f"target {t.text()}")
        if self.load is not None:
            parts.append(self.load.text())
        if self.reason:
            parts.append(f"reason: {self.reason}")
        return "   ".join(parts)


def info(name: str, values: Sequence[float] | float, *, unit: str = "", fmt: str = ",.3g",
         load: Load | None = None) -> Row:
    vals = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    return Row(Target(name, "<=", float("inf"), unit, fmt), vals, None, None, load)


def judge_exact(target: Target, value: float) -> Row:
    """Counts (lost messages, failed requests): the value alone decides."""
    return Row(target, (float(value),), Verdict.PASS if target.met(value) else Verdict.FAIL)


def judge_spread(target: Target, values: Sequence[float], *, loads: Sequence[Load] = (),
                 refuse: Sequence[str | None] = (), load_lowers: bool = False) -> Row:
    """A figure measured in rounds, judged on the range of its rounds (see the module doc).

    ``load_lowers``: other work can only lower this figure (a rate), so a PASS under load
    stands; otherwise (a ratio) load makes any verdict inconclusive.
    """
    vals = tuple(float(v) for v in values)
    load = worst(loads)
    if not vals:
        return Row(target, vals, Verdict.INCONCLUSIVE, "not measured", load)
    reasons = [r for r in refuse if r]
    if len(vals) < MIN_ROUNDS:
        reasons.append(f"{len(vals)} round(s): too few to know the spread (need >= {MIN_ROUNDS})")
    lo_ok, hi_ok = target.met(min(vals)), target.met(max(vals))
    if lo_ok != hi_ok:
        reasons.append(f"spread [{target.show(min(vals))} .. {target.show(max(vals))}] straddles the target")
    verdict = Verdict.PASS if lo_ok and hi_ok else Verdict.FAIL
    if load is not None and load.over and (reasons or not (load_lowers and verdict is Verdict.PASS)):
        reasons.append(f"other processes used {load.foreign_cores:.2f} cores (> {FOREIGN_CORES_MAX}) during the run")
    if reasons:
        return Row(target, vals, Verdict.INCONCLUSIVE, "; ".join(reasons), load)
    return Row(target, vals, verdict, None, load)


def exit_code(rows: Sequence[Row]) -> int:
    """1 when any figure failed, else 3 when any was inconclusive, else 0."""
    verdicts = {r.verdict for r in rows if r.verdict is not None}
    if Verdict.FAIL in verdicts:
        return 1
    return 3 if Verdict.INCONCLUSIVE in verdicts else 0


def summary(rows: Sequence[Row]) -> str:
    judged = [r.verdict for r in rows if r.verdict is not None]
    code = exit_code(rows)
    word = {0: "all targets met", 1: "a target was missed", 3: "not every figure could be resolved"}[code]
    return (f"verdict: {judged.count(Verdict.PASS)} PASS, {judged.count(Verdict.FAIL)} FAIL, "
            f"{judged.count(Verdict.INCONCLUSIVE)} inconclusive -> {word} (exit {code})")


# ------------------------------------------------------------------ measuring the load
def _busy_ticks() -> int:
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def _pid_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime stime


class CpuMonitor:
    """``with CpuMonitor(pids) as m: ...`` then ``m.load``: the cores other processes used
    during the block (``pids``: the benchmark's own processes, this one included)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.load: Load | None = None
        self._hz = os.sysconf("SC_CLK_TCK")
        self._cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def __enter__(self) -> "CpuMonitor":
        self._t0, self._busy0 = time.monotonic(), _busy_ticks()
        self._ours0 = sum(_pid_ticks(p) for p in self.pids)
        self._load0 = os.getloadavg()[0]
        return self

    def __exit__(self, *exc) -> None:
        wall = max(1e-6, time.monotonic() - self._t0)
        foreign = (_busy_ticks() - self._busy0) - (sum(_pid_ticks(p) for p in self.pids) - self._ours0)
        self.load = Load(max(0.0, foreign / self._hz / wall), max(self._load0, os.getloadavg()[0]), self._cores)
