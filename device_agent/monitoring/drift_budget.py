"""The drift monitor's cost budget ([drift] max_cost_share): what drift's work costs, measured on
the device, and the schedule that fits the budget (:func:`runtime.drift.schedule.plan`).

:class:`CostBudget` times the sketched calls on the request threads (each appends its time to a
bounded list the checker swaps out, so no sum is lost to a race), takes each check's CPU (the
checker thread's clock) and the engine's moving-average latency after each check, times the
agent's count-down once (:func:`countdown_cost`), and plans from the medians of the last few
checks: the first checks of a model are the slowest (cold code and caches), so none is planned
from before :data:`WARMUP_CHECKS` checks, and a schedule change starts the measurements of the
new schedule afresh. :func:`tell_cost` is the one warning given without a budget.
"""

from __future__ import annotations

import time
from statistics import median  # runtime.percentile(., 50)'s figure, without numpy's cost per check
from collections import deque
from types import SimpleNamespace
from typing import Any, Callable

from runtime.drift.schedule import Costs, Schedule, plan

from ..logs import get_logger

log = get_logger("drift")

#: checks of a model (or of a new schedule) measured before a plan is made from them
WARMUP_CHECKS = 3
#: sketched-call timings kept between two checks at most (more are not timed)
MAX_TIMINGS = 4096
#: with no cost budget, a model whose checks alone cost more than this share of its inference
#: time gets one ``drift.costly`` warning naming ``max_cost_share``
COSTLY_SHARE = 0.05


class CostBudget:
    """One monitor's budget: ``share`` of the inference time, never denser than ``floor``."""

    def __init__(self, share: float, floor: Schedule, *, samples_per_check: int, agent_type: type) -> None:
        self.share, self.floor, self.samples_per_check = share, floor, samples_per_check
        self._agent_type = agent_type
        self._skip_s: float | None = None
        self.cost_share: float | None = None  # at the last check, under the schedule then in force
        self._timings: list[float] = []
        self._checks: deque[float] = deque(maxlen=5)
        self._keeps: deque[float] = deque(maxlen=5)
        self._latencies: deque[float] = deque(maxlen=9)

    def timed(self, keep: Callable[[str, Any, Any], None]) -> Callable[[str, Any, Any], None]:
        """``keep`` (the monitor's observer), timed on the request's thread."""
        def observe(sha: str, feeds: Any, outputs: Any) -> None:
            t0 = time.perf_counter()
            keep(sha, feeds, outputs)
            t = self._timings
            if len(t) < MAX_TIMINGS:
                t.append(time.perf_counter() - t0)
        return observe

    def reset(self) -> None:
        """A new model: its own costs, measured afresh."""
        self._timings = []
        self._checks.clear()
        self._keeps.clear()
        self._latencies.clear()
        self.cost_share = None

    def after_check(self, check_s: float, latency_s: float | None, current: Schedule) -> Schedule | None:
        """Take one check's CPU and the latency then; the schedule to switch to, or None."""
        timings, self._timings = self._timings, []
        if not latency_s or not timings:
            return None
        self._latencies.append(latency_s)  # their median: a latency spike moves nothing
        self._checks.append(check_s)
        self._keeps.append(sum(timings) / len(timings))
        if self._skip_s is None:
            self._skip_s = countdown_cost(self._agent_type)
        costs = Costs(self._skip_s, median(self._keeps), median(self._checks), median(self._latencies))
        self.cost_share = costs.share(current)
        if len(self._checks) < WARMUP_CHECKS:
            return None
        new = plan(costs, self.share, self.floor, samples_per_check=self.samples_per_check)
        if 0.8 <= new.check_every / current.check_every <= 1.25 and \
                0.8 <= new.sample_every / current.sample_every <= 1.25:
            return None
        self._checks.clear()  # what the new schedule costs is measured afresh
        self._keeps.clear()
        log.info("drift.schedule", sample_every_requests=new.sample_every, check_every_requests=new.check_every,
                 cost_share=round(self.cost_share, 4), max_cost_share=self.share,
                 expected_share=round(costs.share(new), 4))
        return new


def countdown_cost(agent_type: type, n: int = 2000) -> float:
    """Seconds a request that is not sketched costs: the agent's count-down to the next sketched
    call (``agent_type.tap_tensors``, run on a stand-in so the agent's own count is untouched),
    timed once over ``n`` calls on this thread's CPU clock (not the time it waited for the GIL)."""
    probe = SimpleNamespace(_tensor_countdown=1 << 62, _tensor_every=1)
    tap = getattr(agent_type, "tap_tensors", None)
    if tap is None:  # an agent that hands every call over: no count-down to pay
        return 0.0
    t0 = time.thread_time()
    for _ in range(n):
        tap(probe, "", {}, {})
    return (time.thread_time() - t0) / n


def tell_cost(model: str | None, check_s: float, check_every: int, latency_s: float) -> None:
    """Without a budget: warn when a check alone costs over COSTLY_SHARE of the inference time."""
    share = check_s / (check_every * latency_s)
    if share > COSTLY_SHARE:
        log.warning("drift.costly", outcome="unknown", model=model, check_cost_share=round(share, 4),
                    check_us=round(check_s * 1e6),
                    latency_us=round(latency_s * 1e6, 1),
                    hint="the drift checks cost this share of the model's inference time; set [drift] "
                         "max_cost_share = 0.02 to have them spaced out to 2% (a shift then takes more "
                         "requests to alarm), or raise check_every_requests / sample_every_requests")
