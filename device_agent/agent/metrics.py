"""The one request window of the agent: counts by outcome and latency percentiles (pure
bookkeeping, thread-safe).

Every reader of request figures uses this class, so they agree on the same traffic:
``edgeship-agent status`` (the agent's own window, :attr:`Agent.metrics`), the MQTT
``telemetry/metrics`` windows and the update trial window (each their own
:class:`RequestWindow`, fed by ``Agent.add_request_observer`` through :meth:`observe`), and
the Prometheus ``/metrics`` route (:mod:`device_agent.monitoring.collector`, which reads
:meth:`RequestWindow.totals`: counts by model and outcome and a latency histogram, monotonic
since start) and the Open Inference Protocol statistics (``/v2/models/stats``,
:mod:`device_agent.serving.stats`, from the same totals).

Definitions:
- A window runs from the last :meth:`RequestWindow.roll` (or creation) to now.
  :meth:`~RequestWindow.snapshot` reads it without ending it; ``roll()`` ends it and starts a
  new one, so a periodic reporter gets disjoint windows.
- ``requests`` counts every outcome recorded; the agent records rejected (4xx) requests
  too, an observer only sees requests that reached the model (ok or error).
- Latency percentiles are over successful requests only (a failure is judged by the error
  rate), computed with ``runtime.percentile.percentile`` (linear, numpy's default), over
  the newest ``max_samples`` latencies of the window.
- Totals (:meth:`~RequestWindow.totals`) are cumulative since the window object was made and
  never reset by ``roll()``: per model sha, the count of each outcome and a histogram of the
  successful requests' latencies over :data:`LATENCY_BUCKETS_S`, the whole nanoseconds of the
  ok and of the failed requests' latencies (each truncated, as Triton's statistics add them)
  and the clock time of the model's last ok or failed request. At most :data:`MAX_MODELS`
  models are kept; the one recorded least recently is dropped first (its series disappear).
"""

from __future__ import annotations

import bisect
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
#: models whose cumulative totals are kept (a device sees a handful over its life)
MAX_MODELS = 32
#: upper bounds (seconds) of the latency histogram: edge inference, 0.1 ms to 10 s
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                     0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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


@dataclass(frozen=True)
class ModelTotals:
    """Cumulative figures of one model since start: counts by outcome, and the latency histogram
    of its successful requests (``buckets[i]`` counts latencies <= ``LATENCY_BUCKETS_S[i]`` and
    above the bound before; the last entry counts those above every bound). ``latency_ns``: the
    whole nanoseconds of the latencies of its ok and of its failed requests (each truncated);
    ``last_ts``: clock time of its last ok or failed request (0.0 before the first)."""

    counts: dict[Outcome, int]
    buckets: tuple[int, ...]
    latency_sum_s: float
    latency_ns: dict[Outcome, int]
    last_ts: float


class _Totals:
    __slots__ = ("counts", "buckets", "sum_s", "ns", "last_ts")

    def __init__(self) -> None:
        self.counts = {o: 0 for o in Outcome}
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.ns = {Outcome.OK: 0, Outcome.ERROR: 0}
        self.last_ts = 0.0


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
        self._by_model: dict[str, _Totals] = {}  # insertion order = least recently recorded first
        self.models_evicted = 0

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
                self._count(model_sha, outcome, latency_s)

    def _count(self, sha: str, outcome: Outcome, latency_s: float | None) -> None:
        # under the lock
        t = self._by_model.pop(sha, None)
        if t is None:
            t = _Totals()
            if len(self._by_model) >= MAX_MODELS:
                del self._by_model[next(iter(self._by_model))]
                self.models_evicted += 1
        self._by_model[sha] = t  # re-insert: most recently recorded last
        t.counts[outcome] += 1
        if outcome is Outcome.REJECTED:
            return
        t.last_ts = self._clock()
        if latency_s is not None:
            t.ns[outcome] += int(latency_s * 1e9)
            if outcome is Outcome.OK:
                t.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
                t.sum_s += latency_s

    def totals(self) -> dict[str, ModelTotals]:
        """Cumulative counts and latency histograms per model sha since start (copies)."""
        with self._lock:
            return {sha: ModelTotals(counts=dict(t.counts), buckets=tuple(t.buckets), latency_sum_s=t.sum_s,
                                     latency_ns=dict(t.ns), last_ts=t.last_ts)
                    for sha, t in self._by_model.items()}

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


class ModelEvent(str, enum.Enum):
    """What happened to the served model (counted since start for ``/metrics``)."""

    LOAD = "load"                # a session was opened to serve a model (start, switch, rollback, reload)
    LOAD_FAILED = "load_failed"  # the model did not load (at start, or a refused switch)
    SWITCH = "switch"
    ROLLBACK = "rollback"
    RELOAD = "reload"
    UNLOAD = "unload"


class ModelEventCounts:
    """Monotonic counts of :class:`ModelEvent` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {e: 0 for e in ModelEvent}

    def add(self, event: ModelEvent) -> None:
        with self._lock:
            self._counts[event] += 1

    def snapshot(self) -> dict[ModelEvent, int]:
        with self._lock:
            return dict(self._counts)
