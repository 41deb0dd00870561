"""Windowed inference metrics and system readings for ``telemetry/metrics``.

:class:`RequestWindow` is fed by the agent's request observer (any thread) and cut into
windows by the service; :func:`summarize` is the pure statistics over one window's samples.
System readings (CPU, RSS, temperature) come from /proc and /sys, with psutil when present.
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# A window keeps at most this many latency samples (reservoir-free: the newest are kept) so a
# burst cannot grow memory without bound; counts stay exact.
MAX_SAMPLES = 20000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ascending ``sorted_values`` (``q`` in [0, 100])."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class _Window:
    started_mono: float
    count: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)


def summarize(*, count: int, errors: int, latencies_s: list[float], window_s: float) -> dict[str, Any]:
    """Request count, errors, latency percentiles in ms and throughput for one window."""
    lat = sorted(latencies_s)
    ms = lambda v: None if v is None else round(v * 1000.0, 3)  # noqa: E731
    return {
        "window_s": round(window_s, 3), "requests": count, "errors": errors,
        "latency_ms": {"p50": ms(percentile(lat, 50)), "p95": ms(percentile(lat, 95)),
                       "p99": ms(percentile(lat, 99))},
        "throughput_rps": round(count / window_s, 3) if window_s > 0 else 0.0,
    }


class RequestWindow:
    """Thread-safe accumulator; :meth:`observe` matches Agent.add_request_observer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._w = _Window(time.monotonic())

    def observe(self, model_sha: str, ok: bool, latency_s: float) -> None:
        with self._lock:
            w = self._w
            w.count += 1
            if not ok:
                w.errors += 1
            if len(w.latencies_s) < MAX_SAMPLES:
                w.latencies_s.append(latency_s)

    def cut(self) -> dict[str, Any]:
        """Close the current window, start a new one, and return its summary."""
        now = time.monotonic()
        with self._lock:
            w, self._w = self._w, _Window(now)
        return summarize(count=w.count, errors=w.errors, latencies_s=w.latencies_s,
                         window_s=now - w.started_mono)


def read_temperature_c(root: str = "/sys/class/thermal") -> float | None:
    """Highest thermal-zone temperature in deg C, or None where the device exposes none."""
    best = None
    for path in glob.glob(os.path.join(root, "thermal_zone*", "temp")):
        try:
            with open(path, encoding="ascii") as f:
                value = int(f.read().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        best = value if best is None else max(best, value)
    return best


class ProcessSampler:
    """CPU percent of this process since the previous sample, and its resident memory."""

    def __init__(self) -> None:
        self._last_cpu = time.process_time()
        self._last_wall = time.monotonic()

    def sample(self) -> dict[str, Any]:
        cpu, wall = time.process_time(), time.monotonic()
        dt = wall - self._last_wall
        pct = 100.0 * (cpu - self._last_cpu) / dt if dt > 0 else 0.0
        self._last_cpu, self._last_wall = cpu, wall
        return {"cpu_percent": round(pct, 1), "rss_bytes": _rss_bytes(),
                "temperature_c": read_temperature_c()}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing or unsupported platform: report unknown
        return None
