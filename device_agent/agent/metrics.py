"""The one request window of the agent: counts by outcome and latency percentiles (pure
bookkeeping, thread-safe).

Every reader of request figures uses this class, so they agree on the same traffic:
``edgeship-agent status`` (the agent's own window, :attr:`Agent.metrics`), the MQTT
``telemetry/metrics`` windows and the update trial window (each their own
:class:`RequestWindow`, fed by ``Agent.add_request_observer`` through :meth:`observe`), and
next a Prometheus exporter (the ``*_total`` counters are monotonic since start; the
percentiles summarize the current window).

Definitions:
- A window runs from the last :meth:`RequestWindow.roll` (or creation) to now.
  :meth:`~RequestWindow.snapshot` reads it without ending it; ``roll()`` ends it and starts a
  new one, so a periodic reporter gets disjoint windows.
- ``requests`` counts every outcome recorded; the agent records rejected (4xx) requests
  too, an observer only sees requests that reached the model (ok or error).
- Latency percentiles are over successful requests only (a failure is judged by the error
  rate), computed with ``runtime.percentile.percentile`` (linear, numpy's default), over
  the newest ``max_samples`` latencies of the window.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from runtime.percentile import percentile

#: latencies kept per window (the newest); counts stay exact however many requests there are
MAX_SAMPLES = 10_000


class Outcome(str, enum.Enum):
    OK = "ok"              # the model answered
    ERROR = "error"        # the model or engine failed on valid input (5xx)
    REJECTED = "rejected"  # the request was invalid (4xx); the model never ran


@dataclass(frozen=True)
class MetricsSnapshot:
    window_start_ts: float
    window_end_ts: float
    requests: int
    ok: int
    errors: int
    rejected: int
    latency_samples: int
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_p99: float | None
    latency_ms_max: float | None
    latency_ms_mean: float | None
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    requests_total: int = 0
    errors_total: int = 0

    @property
    def window_s(self) -> float:
        return self.window_end_ts - self.window_start_ts

    @property
    def error_rate(self) -> float:
        ran = self.ok + self.errors
        return self.errors / ran if ran else 0.0

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["window_s"] = self.window_s
        d["error_rate"] = self.error_rate
        return d


class _Window:
    def __init__(self, start: float, max_samples: int) -> None:
        self.start = start
        self.counts = {o: 0 for o in Outcome}
        self.latencies: deque[float] = deque(maxlen=max_samples)
        self.by_model: dict[str, dict[str, int]] = {}


class RequestWindow:
    """Counts requests by outcome and keeps up to ``max_samples`` latencies per window.

    ``model``: count only requests of the model with this sha256 (the trial window).
    """

    def __init__(self, *, max_samples: int = MAX_SAMPLES, clock: Callable[[], float] = time.time,
                 model: str | None = None) -> None:
        self._clock = clock
        self._max = max_samples
        self.model = model
        self._lock = threading.Lock()
        self._win = _Window(clock(), max_samples)
        self._total_requests = 0
        self._total_errors = 0

    def record(self, model_sha: str | None, outcome: Outcome, latency_s: float | None = None) -> None:
        if self.model is not None and model_sha != self.model:
            return
        with self._lock:
            w = self._win
            w.counts[outcome] += 1
            self._total_requests += 1
            if outcome is Outcome.ERROR:
                self._total_errors += 1
            if latency_s is not None and outcome is Outcome.OK:
                w.latencies.append(latency_s)
            if model_sha is not None:
                m = w.by_model.setdefault(model_sha, {"requests": 0, "errors": 0})
                m["requests"] += 1
                m["errors"] += outcome is Outcome.ERROR

    def observe(self, model_sha: str, ok: bool, latency_s: float) -> None:
        """A request observer (``Agent.add_request_observer``): the model answered or failed."""
        self.record(model_sha, Outcome.OK if ok else Outcome.ERROR, latency_s)

    def snapshot(self) -> MetricsSnapshot:
        """The current window so far (does not end it)."""
        with self._lock:
            frozen = self._freeze(self._win, self._clock())
        return _snap(*frozen)

    def roll(self) -> MetricsSnapshot:
        """End the current window, start a new one, and return the one that ended."""
        with self._lock:
            now = self._clock()
            frozen = self._freeze(self._win, now)
            self._win = _Window(now, self._max)
        return _snap(*frozen)

    def _freeze(self, w: _Window, now: float) -> tuple:
        # copies only, under the lock: the percentiles are computed after it is released so
        # request threads calling record() never wait on a sort of up to max_samples values
        return (w.start, now, dict(w.counts), np.array(w.latencies, dtype=np.float64),
                {k: dict(v) for k, v in w.by_model.items()}, self._total_requests, self._total_errors)


def _snap(start: float, now: float, c: dict, lat_s: np.ndarray, by_model: dict,
          requests_total: int, errors_total: int) -> MetricsSnapshot:
    lat = lat_s * 1e3
    return MetricsSnapshot(
        window_start_ts=start, window_end_ts=now,
        requests=sum(c.values()), ok=c[Outcome.OK], errors=c[Outcome.ERROR], rejected=c[Outcome.REJECTED],
        latency_samples=int(lat.size), latency_ms_p50=percentile(lat, 50), latency_ms_p95=percentile(lat, 95),
        latency_ms_p99=percentile(lat, 99), latency_ms_max=float(lat.max()) if lat.size else None,
        latency_ms_mean=float(lat.mean()) if lat.size else None,
        by_model=by_model, requests_total=requests_total, errors_total=errors_total,
    )
