"""The drift cost budget: how sparsely to sketch and check so drift's CPU stays under a share
of the model's inference time.

Drift costs a fixed amount per check (a few hundred microseconds of numpy calls on a small
device, whatever the traffic), a little per sketched request, and a count-down on every other
request. On a model that answers in tens of microseconds that is 10-20% of its time at one
check per 100 requests; on a model of a few milliseconds it is well under 1%. :func:`plan`
takes the measured costs and the model's latency and returns the densest :class:`Schedule`
(one request in ``sample_every`` sketched, a check every ``check_every`` requests) whose cost
per request (the request thread's and the checker's together) fits ``share`` x latency, never
denser than the configured schedule. A sparser schedule means a shift takes more requests to
alarm (``window_checks`` to ``window_checks + sustain_checks`` checks of ``check_every``): a
fraction of a second of traffic on a model of tens of microseconds, about a minute on one of a
millisecond or two whose large inputs make each check cost tens of milliseconds.

Pure: the device's drift monitor measures, calls :func:`plan` after each check and applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the sparsest sampling and checking a budget may choose (or the configured schedule, when sparser)
MAX_SAMPLE_EVERY = 64
MAX_CHECK_EVERY = 1_000_000
#: a sparser schedule is planned for this share of the budget, so the noise of what was measured
#: (a check's CPU varies by half from one to the next on a busy machine) stays under it
AIM = 0.8


@dataclass(frozen=True)
class Schedule:
    """One request in ``sample_every`` sketched; a check every ``check_every`` requests."""

    sample_every: int
    check_every: int


@dataclass(frozen=True)
class Costs:
    """Measured costs, in seconds: ``skip_s`` the count-down on a request that is not sketched,
    ``keep_s`` the request thread's work on a sketched one, ``check_s`` one check (counting the
    sketched calls and scoring), ``latency_s`` the model's inference time."""

    skip_s: float
    keep_s: float
    check_s: float
    latency_s: float

    def per_request(self, s: Schedule) -> float:
        """Drift's CPU per request under schedule ``s``."""
        return self.skip_s + self.keep_s / s.sample_every + self.check_s / s.check_every

    def share(self, s: Schedule) -> float:
        """:meth:`per_request` as a share of the inference time (0 when it is not known)."""
        return self.per_request(s) / self.latency_s if self.latency_s > 0 else 0.0


def plan(costs: Costs, share: float, floor: Schedule, *, samples_per_check: int = 80) -> Schedule:
    """The schedule with the fewest requests per check whose cost per request is under ``share``
    x ``costs.latency_s`` (planned for :data:`AIM` of it), ``floor`` when that fits already (``share`` <= 0 or an unknown latency:
    ``floor``). A sparser schedule sketches about ``samples_per_check`` requests per check (so a
    window of checks holds what the alarm rule needs, and a check costs what was measured), one
    in ``k`` for ``k`` = its requests per check / that (the cost is then about ``skip_s + (keep_s x
    samples_per_check + check_s) / check_every``), then the fewest requests per check for that
    ``k``: ``check_s / (budget - skip_s - keep_s / k)``. Never denser than ``floor``; the
    sparsest allowed when even that does not fit."""
    budget = share * costs.latency_s
    if budget <= 0 or costs.per_request(floor) <= budget:
        return floor
    budget *= AIM
    room = budget - costs.skip_s
    # the sparsest allowed, never denser than configured (a floor may be sparser than the maxima)
    k_max, p_max = max(MAX_SAMPLE_EVERY, floor.sample_every), max(MAX_CHECK_EVERY, floor.check_every)
    sparsest = Schedule(k_max, max(k_max, -(-p_max // k_max) * k_max))
    if room <= 0:
        return sparsest
    n = max(1, samples_per_check)
    k = max(floor.sample_every, min(k_max, math.ceil((costs.keep_s * n + costs.check_s) / room) // n))
    if room <= costs.keep_s / k:  # sketching one in k alone is over: as sparse as allowed
        k = k_max
        if room <= costs.keep_s / k:
            return sparsest
    p = math.ceil(costs.check_s / (room - costs.keep_s / k))  # the fewest requests per check for that k
    p = min(p_max, max(floor.check_every, p))
    return Schedule(k, max(k, -(-p // k) * k))  # a whole number of sketched requests per check
