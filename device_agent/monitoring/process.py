"""``process_*`` families of ``/metrics`` and the agent's slow readings, made cheap per scrape.

:class:`ProcessFamilies` — the families of prometheus_client's ``ProcessCollector`` (same names
and help, so dashboards built for it keep working), read live at every scrape without its three
file opens: CPU from ``CLOCK_PROCESS_CPUTIME_ID`` (``time.process_time``: every thread's user
and system time, what ``/proc/self/stat`` counts in clock ticks), resident and virtual memory
from one ``pread`` of ``/proc/self/statm`` kept open, the fd limit from ``getrlimit``; the
start time is read once; the open fds (a listing of ``/proc/self/fd``, ~0.1 ms in a busy agent)
are counted by the :class:`Sampler` every second.

:class:`Sampler` — readings refreshed every ``interval_s`` by one daemon thread instead of per
scrape, for sources that may block or cost a system call walk: a SoC thermal zone is a driver
read (on some boards an I2C transfer of milliseconds). A scrape reads the last values, at most
``interval_s`` (1 s) old.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class ProcessFamilies(Collector):
    """``sampler``: counts the open fds every second (without one, they are counted per scrape)."""

    def __init__(self, proc: str = "/proc", *, sampler: "Sampler | None" = None) -> None:
        self._page = resource.getpagesize()
        self._statm = None
        fd_dir = os.path.join(proc, "self", "fd")
        self._open_fds = lambda: len(os.listdir(fd_dir))
        if sampler is not None:
            sampler.add("open_fds", self._open_fds)
            self._open_fds = lambda: sampler.values.get("open_fds")
        self._start_s: float | None = None
        try:
            self._statm = open(os.path.join(proc, "self", "statm"), "rb", buffering=0)
            with open(os.path.join(proc, "self", "stat"), "rb") as f:
                started_ticks = float(f.read().split(b")")[-1].split()[19])
            with open(os.path.join(proc, "stat"), "rb") as f:
                btime = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
            self._start_s = btime + started_ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, StopIteration):
            pass  # no /proc (not Linux): CPU time and the fd limit only

    def close(self) -> None:
        if self._statm is not None:
            self._statm.close()

    def collect(self) -> Iterable[Any]:
        out = []
        if self._statm is not None:
            try:
                pages = os.pread(self._statm.fileno(), 128, 0).split()
                out.append(GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                             value=float(pages[0]) * self._page))
                out.append(GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                             value=float(pages[1]) * self._page))
            except (OSError, ValueError, IndexError):
                pass
        if self._start_s is not None:
            out.append(GaugeMetricFamily("process_start_time_seconds",
                                         "Start time of the process since unix epoch in seconds.", value=self._start_s))
        out.append(CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                                       value=time.process_time()))
        try:
            fds = self._open_fds()
        except OSError:
            fds = None
        if fds is not None:
            out.append(GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=fds))
        out.append(GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                                     value=float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])))
        return out


class Sampler:
    """Readings ``add``-ed by name, made again every ``interval_s`` on one daemon thread;
    :attr:`values` holds the last result of each (None: that reading failed)."""

    def __init__(self, *, interval_s: float = 1.0, name: str = "edgeship-sampler") -> None:
        self.interval_s = interval_s
        self.values: dict[str, Any] = {}
        self._reads: dict[str, Callable[[], Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, name: str, read: Callable[[], Any]) -> None:
        """Sample ``read()`` from now on; its first value is read here, before any scrape."""
        self._reads = dict(self._reads, **{name: read})
        self._sample(name, read)

    def _sample(self, name: str, read: Callable[[], Any]) -> None:
        try:
            self.values[name] = read()
        except Exception:  # a reading that fails now is absent, as when there is none
            self.values[name] = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name, read in self._reads.items():
                self._sample(name, read)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
