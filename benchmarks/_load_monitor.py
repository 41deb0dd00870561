"""What other work did to the machine while a benchmark measured: the two load measures the
verdict rules (``_verdict``) accept. Not to be confused with ``_load``, which *generates* load.

- :class:`Load` (:class:`LoadMonitor`): the 1-minute load average sampled during the run;
  "over" when it went above the core count. Right for a benchmark that leaves cores idle.
- :class:`CpuLoad` (:class:`CpuMonitor`): the cores used by *other* processes, i.e. the CPU
  time of the whole machine (/proc/stat) minus that of the benchmark's own processes (itself,
  its broker, its consumer) per second of the round; "over" above
  :data:`FOREIGN_CORES_MAX`. Right for a benchmark that keeps every core busy itself (the
  MQTT throughput runs), where the load average cannot tell other work from ours.

Both give ``over``, ``text()`` (printed beside the figure) and ``why()`` (the reason a verdict
was refused); :func:`worst` combines the loads of the rounds that make one figure.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Sequence, Union

#: other processes using more than this many cores during a round make it "under load"
FOREIGN_CORES_MAX = 0.5


@dataclass(frozen=True)
class Load:
    """1-minute load average seen while a figure was measured."""

    mean: float | None
    max: float | None
    cores: int

    @property
    def over(self) -> bool:
        return self.max is not None and self.max > self.cores

    def text(self) -> str:
        if self.max is None:
            return "load n/a"
        return f"load {self.mean:.2f} (max {self.max:.2f}) on {self.cores} cores"

    def why(self) -> str:
        return f"load {self.max:.2f} above {self.cores} cores during the run"


@dataclass(frozen=True)
class CpuLoad:
    """Cores used by other processes (mean over a round) and the 1-minute load average (max)."""

    foreign_cores: float
    loadavg: float
    cores: int

    @property
    def over(self) -> bool:
        return self.foreign_cores > FOREIGN_CORES_MAX

    def text(self) -> str:
        return f"other processes {self.foreign_cores:.2f} cores, loadavg {self.loadavg:.2f} on {self.cores} cores"

    def why(self) -> str:
        return f"other processes used {self.foreign_cores:.2f} cores (> {FOREIGN_CORES_MAX}) during the run"


AnyLoad = Union[Load, CpuLoad]


def worst(loads: Sequence[AnyLoad | None]) -> AnyLoad | None:
    """One load for a figure measured over several rounds: the busiest round decides.

    Raises:
        TypeError: the rounds mix the two kinds of load.
    """
    loads = [x for x in loads if x is not None]
    if not loads:
        return None
    if len({type(x) for x in loads}) > 1:
        raise TypeError("rounds measured with different load monitors cannot be combined")
    if isinstance(loads[0], CpuLoad):
        return CpuLoad(max(x.foreign_cores for x in loads), max(x.loadavg for x in loads), loads[0].cores)
    seen = [x for x in loads if x.max is not None]
    if not seen:
        return loads[0]
    return Load(sum(x.mean for x in seen) / len(seen), max(x.max for x in seen), seen[0].cores)


class LoadMonitor:
    """Samples ``os.getloadavg()`` every ``interval_s`` in a daemon thread while in use.

    ``with LoadMonitor() as mon: ...; mon.load()`` gives the load during the block.
    """

    def __init__(self, *, interval_s: float = 0.5, cores: int | None = None) -> None:
        self.interval_s = interval_s
        self.cores = cores or len(allowed_cpus())
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LoadMonitor":
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="load-monitor")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            self.samples.append(os.getloadavg()[0])
        except (AttributeError, OSError):
            pass

    def load(self) -> Load:
        if not self.samples:
            return Load(None, None, self.cores)
        return Load(sum(self.samples) / len(self.samples), max(self.samples), self.cores)


def allowed_cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


# ------------------------------------------------------------------ CPU time of other processes
def _busy_ticks() -> int:
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def _pid_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime stime


class CpuMonitor:
    """``with CpuMonitor(pids) as m: ...`` then ``m.load``: the cores other processes used
    during the block (``pids``: the benchmark's own processes, this one included)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.load: CpuLoad | None = None
        self._hz = os.sysconf("SC_CLK_TCK")
        self._cores = len(allowed_cpus())

    def __enter__(self) -> "CpuMonitor":
        self._t0, self._busy0 = time.monotonic(), _busy_ticks()
        self._ours0 = sum(_pid_ticks(p) for p in self.pids)
        self._load0 = os.getloadavg()[0]
        return self

    def __exit__(self, *exc) -> None:
        wall = max(1e-6, time.monotonic() - self._t0)
        foreign = (_busy_ticks() - self._busy0) - (sum(_pid_ticks(p) for p in self.pids) - self._ours0)
        self.load = CpuLoad(max(0.0, foreign / self._hz / wall), max(self._load0, os.getloadavg()[0]), self._cores)
