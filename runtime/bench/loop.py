"""The timing loop. Times only the inference call, with ``time.perf_counter_ns``.

Single stream: one call in flight; the next starts when the previous returns. Warm-up runs
until BOTH ``warmup_min_iters`` and ``warmup_min_s`` are met and is never counted; then the
measured phase runs until BOTH ``min_iters`` and ``min_duration_s`` are met (or the
``max_duration_s`` cap). Throughput with ``streams`` > 1: that many threads call the same
session back to back; only calls that start and end inside the measured phase count, and
throughput is counted over the phase's wall time.

The Python garbage collector is paused during timed phases so a collection pause is not
charged to the engine (the caller's session has nothing to collect on this path).
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .spec import RunLength

Call = Callable[[object], object]


@dataclass(frozen=True)
class Measurement:
    samples_s: list[float]  # per-call latency, in call-completion order
    wall_s: float  # wall time of the measured phase
    warmup_iters: int
    warmup_s: float
    length_met: bool  # False when max_duration_s stopped the phase before both minima


class _GcPaused:
    def __enter__(self):
        self._was = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc):
        if self._was:
            gc.enable()


def time_first_call(call: Call, feeds: object) -> float:
    """Latency of one call, in seconds (used for the cold first inference)."""
    t0 = time.perf_counter_ns()
    call(feeds)
    return (time.perf_counter_ns() - t0) / 1e9


def single_stream(call: Call, pool: Sequence[object], length: RunLength) -> Measurement:
    """Run warm-up then the measured phase, one call in flight."""
    clock = time.perf_counter_ns
    k = len(pool)
    with _GcPaused():
        i, t0 = 0, clock()
        while i < length.warmup_min_iters or clock() - t0 < length.warmup_min_s * 1e9:
            call(pool[i % k])
            i += 1
        warm_iters, warm_s = i, (clock() - t0) / 1e9
        samples: list[int] = []
        min_ns, max_ns = length.min_duration_s * 1e9, length.max_duration_s * 1e9
        n, start = 0, clock()
        while True:
            now = clock()
            if n >= length.min_iters and now - start >= min_ns:
                met = True
                break
            if now - start >= max_ns:
                met = False
                break
            a = clock()
            call(pool[(i + n) % k])
            samples.append(clock() - a)
            n += 1
        wall = (clock() - start) / 1e9
    return Measurement([s / 1e9 for s in samples], wall, warm_iters, warm_s, met)


def multi_stream(call: Call, pool: Sequence[object], length: RunLength, *, streams: int) -> Measurement:
    """``streams`` threads keep one call each in flight on the same session."""
    clock = time.perf_counter_ns
    k = len(pool)
    phase = {"value": 0}  # 0 warm-up, 1 measured, 2 stop
    bounds = {"start": 0, "end": 0}
    per_thread: list[list[tuple[int, int]]] = [[] for _ in range(streams)]
    warm_counts = [0] * streams
    measured_counts = [0] * streams
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        j = w
        try:
            while phase["value"] != 2:
                ph = phase["value"]
                a = clock()
                call(pool[j % k])
                b = clock()
                j += streams
                if ph == 0:
                    warm_counts[w] += 1
                else:
                    measured_counts[w] += 1
                per_thread[w].append((a, b))
        except BaseException as e:  # surfaced to the caller after join
            errors.append(e)
            phase["value"] = 2

    with _GcPaused():
        t0 = clock()
        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(streams)]
        for t in threads:
            t.start()
        while not errors and (sum(warm_counts) < length.warmup_min_iters
                              or clock() - t0 < length.warmup_min_s * 1e9):
            time.sleep(0.001)
        bounds["start"] = clock()
        phase["value"] = 1
        met = False
        while not errors:
            time.sleep(0.005)
            now = clock()
            done = sum(measured_counts)
            if done >= length.min_iters and now - bounds["start"] >= length.min_duration_s * 1e9:
                met = True
                break
            if now - bounds["start"] >= length.max_duration_s * 1e9:
                break
        bounds["end"] = clock()
        phase["value"] = 2
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    s, e = bounds["start"], bounds["end"]
    inside = sorted((b, b - a) for lst in per_thread for a, b in lst if a >= s and b <= e)
    warm = sum(1 for lst in per_thread for a, _ in lst if a < s)
    return Measurement([d / 1e9 for _, d in inside], (e - s) / 1e9, warm, (s - t0) / 1e9, met)
