"""An open-loop load generator shared by the benchmarks (no coordinated omission).

Request ``i`` is scheduled at ``t0 + i / rate`` whatever happened to earlier requests; a
pool of worker threads sends each at (or, when every worker is busy, after) its scheduled
time, and latency counts **from the scheduled time**, so a stall that delays later requests
shows up as their latency instead of silently lowering the rate. The achieved rate (requests
completed per second of the run) is reported next to the offered one: when it falls short,
the generator itself could not keep up and the figures say so.

Each worker gets its own ``call`` from ``make_call()`` (e.g. its own HTTP connection). A call
returns an outcome word ("ok", "retry", ...) or raises; an exception counts as "failed" and
its ``repr`` is kept (the first few).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Sent:
    index: int
    scheduled: float  # perf_counter time the request was due
    sent: float  # when a worker actually sent it
    done: float
    outcome: str
    detail: Any = None  # what the call returned beside the outcome (e.g. the model version)

    @property
    def latency_s(self) -> float:
        """From the scheduled time: includes any wait for a free worker."""
        return self.done - self.scheduled


class OpenLoop:
    """``with OpenLoop(make_call, rate=200) as load: ...``; then ``load.results``/``load.summary()``.

    ``duration_s`` bounds the schedule (None: until the block ends). ``make_call()`` is called
    once per worker thread and returns ``call() -> str | (str, detail)``.
    """

    def __init__(self, make_call: Callable[[], Callable[[], Any]], *, rate: float, workers: int = 8,
                 duration_s: float | None = None, start_delay_s: float = 0.05, keep_errors: int = 5) -> None:
        if rate <= 0 or workers < 1:
            raise ValueError("rate must be > 0 and workers >= 1")
        self.make_call, self.rate, self.workers = make_call, float(rate), workers
        self.duration_s, self.start_delay_s, self.keep_errors = duration_s, start_delay_s, keep_errors
        self.results: list[Sent] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = self.t_end = 0.0

    def __enter__(self) -> "OpenLoop":
        self.t0 = time.perf_counter() + self.start_delay_s
        self._threads = [threading.Thread(target=self._worker, daemon=True, name=f"load-{w}")
                         for w in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop scheduling; wait for requests in flight."""
        self._stop.set()
        for t in self._threads:
            t.join()
        self.t_end = max([time.perf_counter()] + [r.done for r in self.results])

    def wait(self) -> None:
        """Block until a bounded schedule (``duration_s``) has been sent and answered."""
        for t in self._threads:
            t.join()
        self.t_end = max([time.perf_counter()] + [r.done for r in self.results])

    def _take(self) -> tuple[int, float] | None:
        with self._lock:
            i = self._next
            due = self.t0 + i / self.rate
            if self._stop.is_set() or (self.duration_s is not None and i >= int(self.rate * self.duration_s)):
                return None
            self._next += 1
            return i, due

    def _worker(self) -> None:
        call = self.make_call()
        while True:
            job = self._take()
            if job is None:
                return
            i, due = job
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                return  # stopped while waiting: this request was never due inside the run
            sent = time.perf_counter()
            try:
                out = call()
                outcome, detail = out if isinstance(out, tuple) else (out, None)
            except Exception as e:  # noqa: BLE001 - a failed request is the figure, kept by repr
                outcome, detail = "failed", None
                with self._lock:
                    if len(self.errors) < self.keep_errors:
                        self.errors.append(repr(e))
            done = time.perf_counter()
            with self._lock:
                self.results.append(Sent(i, due, sent, done, str(outcome), detail))

    # ------------------------------------------------------------------ figures
    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    def summary(self) -> dict[str, Any]:
        """Offered and achieved rate, outcome counts, latency from the scheduled time (ms)."""
        res = sorted(self.results, key=lambda r: r.index)
        span = max(self.t_end - self.t0, 1e-9)
        lat = np.asarray([r.latency_s for r in res]) * 1e3
        late = np.asarray([r.sent - r.scheduled for r in res]) * 1e3
        outcomes: dict[str, int] = {}
        for r in res:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
        return {
            "offered_per_s": self.rate, "achieved_per_s": len(res) / span, "requests": len(res),
            "outcomes": outcomes, "duration_s": span,
            "latency_ms": {"p50": pct(50), "p99": pct(99), "max": float(lat.max()) if lat.size else float("nan")},
            "send_late_ms_max": float(late.max()) if late.size else float("nan"),
            "errors": list(self.errors),
        }


def describe(summary: dict[str, Any]) -> str:
    """One line for the printed figures."""
    lat = summary["latency_ms"]
    outs = ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items()))
    return (f"{summary['requests']} requests, offered {summary['offered_per_s']:.0f}/s, achieved "
            f"{summary['achieved_per_s']:.0f}/s ({outs}); latency from the scheduled time p50 "
            f"{lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms; latest send "
            f"{summary['send_late_ms_max']:.2f} ms after its schedule")
