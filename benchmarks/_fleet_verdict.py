"""Verdicts of the fleet benchmarks (a small local helper until a shared one lands on main).

A :class:`Target` is judged on the rounds measured (``judge``):

- fewer than ``min_rounds`` rounds: **inconclusive** (no spread to judge by);
- PASS when every round meets the target, FAIL when none does, else **inconclusive**
  (the rounds straddle the target);
- a FAIL while the 1-minute load average was above the core count during the run
  (other work on the machine) is reported **inconclusive** with that reason: the figures
  here are durations, which load can only make worse, so a PASS under load stands.

Exit code (:meth:`Report.exit_code`): 1 when any figure FAILs, else 3 when any is
inconclusive, else 0.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

_OPS = {"<": lambda v, lim: v < lim, "<=": lambda v, lim: v <= lim,
        ">": lambda v, lim: v > lim, ">=": lambda v, lim: v >= lim}


@dataclass(frozen=True)
class Target:
    name: str
    op: str
    limit: float
    unit: str = ""
    min_rounds: int = 3


def load_now() -> float:
    return os.getloadavg()[0]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def judge(self, t: Target, rounds: list[float], *, max_load: float, note: str = "") -> str:
        meets = [_OPS[t.op](v, t.limit) for v in rounds]
        cores = os.cpu_count() or 1
        if len(rounds) < t.min_rounds:
            verdict, why = "inconclusive", f"{len(rounds)} round(s) < {t.min_rounds}"
        elif all(meets):
            verdict, why = "PASS", ""
        elif not any(meets):
            verdict, why = ("inconclusive", f"load average {max_load:.1f} > {cores} cores during the run") \
                if max_load > cores else ("FAIL", "")
        else:
            verdict, why = "inconclusive", "the rounds straddle the target"
        med = statistics.median(rounds) if rounds else float("nan")
        spread = f"[{min(rounds):.3g} .. {max(rounds):.3g}]" if rounds else ""
        line = (f"  {t.name:<52} {med:8.3g} {t.unit:<4} {spread:<22} target {t.op} {t.limit:g} {t.unit}  "
                f"{verdict}" + (f" ({why})" if why else "") + (f"  {note}" if note else ""))
        self.lines.append(line)
        self.verdicts.append(verdict)
        print(line, flush=True)
        return verdict

    def exit_code(self) -> int:
        if "FAIL" in self.verdicts:
            return 1
        return 3 if "inconclusive" in self.verdicts else 0
