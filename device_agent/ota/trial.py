"""The trial window after a switch: watch the new model's requests, judge them, decide.

Requests are seen through ``Agent.add_request_observer`` and counted in the agent's one
request window definition (:class:`~device_agent.agent.metrics.RequestWindow`, restricted
to the new model), so the trial judges the same figures ``edgeship-agent status`` and the
MQTT metrics report. With no live traffic the window would prove nothing, so the trial also
sends a canary request (a golden input) through the agent every ``trial_probe_interval_s``;
canaries count like any other request, and a model that kills the process on them is
caught by the crash counter in the journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.contracts.bundle import GOLDEN_NPZ, BundleError, BundleInfo, golden_calls

from ..agent.metrics import MetricsSnapshot, RequestWindow
from .config import UpdateSection
from .errors import Reason
from .states import TrialStats, Verdict, judge_trial


def golden_feeds(model_dir: Path, info: BundleInfo) -> list[dict]:
    """The golden inputs of a stored model, the trial's canary requests (none when unreadable)."""
    try:
        with np.load(model_dir / GOLDEN_NPZ, allow_pickle=False) as z:
            return [f for f, _ in golden_calls({k: z[k] for k in z.files}, info)]
    except (OSError, BundleError, ValueError):
        return []


def trial_stats(w: MetricsSnapshot) -> TrialStats:
    """What the pure judge needs from a window of the new model's requests."""
    return TrialStats(requests=w.requests, errors=w.errors, p95_ms=w.latency_ms_p95)


def run_trial(*, agent, sha256: str, cfg: UpdateSection, latency_budget_ms: float | None,
              probe_feeds: list[dict], cancelled: Callable[[], bool],
              poll_s: float = 0.02) -> tuple[Verdict, Reason | None, str]:
    """Watch the new model until the window passes or fails (or the update is cancelled)."""
    window = RequestWindow(model=sha256, clock=time.monotonic)
    agent.add_request_observer(window.observe)
    limit = latency_budget_ms * cfg.trial_latency_factor if latency_budget_ms else None
    t0 = time.monotonic()
    next_probe = t0
    i = 0
    try:
        while True:
            now = time.monotonic()
            if cfg.trial_probe_interval_s > 0 and probe_feeds and now >= next_probe:
                _probe(agent, probe_feeds[i % len(probe_feeds)])
                i += 1
                next_probe = now + cfg.trial_probe_interval_s
            verdict, reason, detail = judge_trial(
                trial_stats(window.snapshot()), elapsed_s=time.monotonic() - t0, window_requests=cfg.trial_requests,
                window_s=cfg.trial_duration_s, max_error_rate=cfg.trial_max_error_rate,
                min_requests_for_rate=cfg.trial_min_requests, max_p95_latency_ms=limit)
            if verdict is not Verdict.CONTINUE:
                return verdict, reason, detail
            if cancelled():
                return Verdict.FAIL, Reason.CANCELLED, "cancelled during the trial"
            time.sleep(poll_s)
    finally:
        agent.remove_request_observer(window.observe)


def _probe(agent, feeds: dict) -> None:
    try:
        agent.infer(feeds)
    except Exception:  # noqa: BLE001 - the observer has counted it as a failed request
        pass
