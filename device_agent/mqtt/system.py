"""System readings for ``telemetry/metrics``: CPU, RSS and temperature, from /proc and /sys
(psutil when present). The request figures of the same message come from the agent's one
request window (:mod:`device_agent.agent.metrics`).
"""

from __future__ import annotations

import glob
import os
import time
from typing import Any

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
