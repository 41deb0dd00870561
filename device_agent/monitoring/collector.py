"""The Prometheus collector of the agent: every figure read from live state at scrape time
(the SoC temperature, the open fds and the update journal excepted: sampled every second).

Nothing here counts requests itself: request and error counts and the latency histogram come
from the agent's one request window (:meth:`RequestWindow.totals`), the same bookkeeping that
``edgeship-agent status``, the MQTT metrics and the update trial read. Families (all names in
base units, counters end in ``_total``; labels are bounded: model name/version of the few
models served since start, fixed outcome/event/state names, reason codes from a fixed set):

- ``edgeship_requests_total{model,version,outcome}`` — outcome ``ok``, ``error``, ``rejected``
- ``edgeship_inference_duration_seconds{model,version}`` — histogram of successful requests
- ``edgeship_model_events_total{event}`` — load, load_failed, switch, rollback, reload, unload
- ``edgeship_active_model_info{name,version,release,engine,precision,sha256}``, ``edgeship_model_ready``
- ``edgeship_update_state{edgeship_update_state}`` (state set; ``idle`` when none runs),
  ``edgeship_update_last_result_info{model,release,state,reason}``, ``edgeship_update_last_timestamp_seconds``
- sources added with :meth:`AgentCollector.add_source` (telemetry queue, drift) bring their own
- ``process_*`` (the families of prometheus_client's ProcessCollector, read by
  :class:`~.process.ProcessFamilies`), ``edgeship_soc_temperature_celsius`` (hottest
  ``/sys/class/thermal`` zone; absent where none is readable)

Sampled every :data:`SAMPLE_INTERVAL_S` (1 s) by one thread (:class:`~.process.Sampler`), not
per scrape, so what a scrape serves of them is at most 1 s old (their HELP says so): the
thermal zones (a zone read is a driver call, on some boards an I2C transfer of milliseconds),
the open fds (a listing of ``/proc/self/fd``) and the update journal (a stat, re-read when its
mtime changes). Everything else is read at the scrape, from memory and in-memory counters
(plus one ``pread`` of ``/proc/self/statm``): no SQLite query, no file opened, no lock held
longer than a copy, so :mod:`device_agent.serving.metrics_route` renders it on the event loop.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import threading
from typing import Any, Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, StateSetMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from runtime.contracts.statedir import StateDir

from .. import __version__
from ..agent.metrics import LATENCY_BUCKETS_S, Outcome
from ..mqtt.system import read_temperature_c
from .process import ProcessFamilies, Sampler

#: update states as the state set names them (``idle``: no update running)
UPDATE_STATES = ("idle", "fetch", "verify", "stage", "gate", "switch", "trial")
#: seconds between two readings of the sampled sources (what a scrape serves of them is at most this old)
SAMPLE_INTERVAL_S = 1.0
_LE = [repr(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
_HIST = "edgeship_inference_duration_seconds"

Source = Callable[[], Iterable[Any]]


class AgentCollector(Collector):
    """Collects the agent's families at scrape time. Thread-safe (scrapes only read)."""

    def __init__(self, agent: Any, *, temperature: Callable[[], float | None] | None = None) -> None:
        self.agent = agent
        # EDGESHIP_THERMAL_ROOT: another /sys/class/thermal (a test's, on a machine without zones)
        root = os.environ.get("EDGESHIP_THERMAL_ROOT", "/sys/class/thermal")
        #: the readings refreshed every SAMPLE_INTERVAL_S rather than per scrape (see the module doc)
        self.sampler = Sampler(interval_s=SAMPLE_INTERVAL_S, name="edgeship-metrics-sampler")
        self.sampler.add("temperature", temperature or (lambda: read_temperature_c(root)))
        self.sampler.add("journal", _JournalCache(StateDir(agent.config.state_dir).journal).read)
        self._sources: list[Source] = []
        self._refs: dict[str, tuple[str, str]] = {}  # sha -> (name, version), bounded by the window's models
        self._lock = threading.Lock()
        self._built: dict[str, tuple[Any, list[Any]]] = {}  # see _memo
        self._hist_labels: dict[tuple[str, str], tuple[list[dict], dict]] = {}

    def add_source(self, source: Source) -> None:
        """Add a callable returning metric families (telemetry queue, drift); read at every scrape,
        on the event loop: it must not block (no disk or database read, no lock held long)."""
        with self._lock:
            self._sources.append(source)

    def close(self) -> None:
        """Stop the sampler thread."""
        self.sampler.stop()

    def collect(self) -> Iterator[Any]:
        yield from self._requests()
        yield from self._model()
        yield from self._update()
        t = self.sampler.values.get("temperature")
        if t is not None:
            g = GaugeMetricFamily("edgeship_soc_temperature_celsius", "Hottest thermal zone of the SoC "
                                  f"(read every {SAMPLE_INTERVAL_S:g} s).")
            g.add_metric([], t)
            yield g
        with self._lock:
            sources = list(self._sources)
        for src in sources:
            yield from src()

    # ------------------------------------------------------------ requests
    def _label(self, sha: str) -> tuple[str, str]:
        got = self._refs.get(sha)
        if got is None:
            try:
                ref = self.agent.store.ref(sha)
                got = (ref.name, ref.version)
            except Exception:  # garbage-collected since: keep the series, name it by sha
                got = (sha[:12], "unknown")
            if len(self._refs) > 256:
                self._refs.clear()
            self._refs[sha] = got
        return got

    def _requests(self) -> Iterator[Any]:
        totals = self.agent.metrics.totals()
        req = CounterMetricFamily("edgeship_requests", "Inference requests by model, version and outcome "
                                  "(ok; error: the engine failed; rejected: invalid input).",
                                  labels=["model", "version", "outcome"])
        hist = HistogramMetricFamily(_HIST,
                                     "Latency of successful inference calls in the agent.",
                                     labels=["model", "version"], unit="")
        for sha, t in totals.items():
            name, version = self._label(sha)
            for o in Outcome:
                req.add_metric([name, version, o.value], t.counts[o])
            hist.samples.extend(self._histogram(name, version, t))
        yield req
        yield hist

    def _histogram(self, name: str, version: str, t: Any) -> list[Sample]:
        """The samples ``HistogramMetricFamily.add_metric`` makes (cumulative buckets, count,
        sum), over label dicts made once per model rather than 19 new ones per scrape."""
        labels = self._hist_labels.get((name, version))
        if labels is None:
            if len(self._hist_labels) > 256:
                self._hist_labels.clear()
            base = {"model": name, "version": version}
            labels = self._hist_labels[(name, version)] = ([dict(base, le=le) for le in _LE], base)
        cum = list(itertools.accumulate(t.buckets))
        out = [Sample(_HIST + "_bucket", lab, n) for lab, n in zip(labels[0], cum)]
        out.append(Sample(_HIST + "_count", labels[1], cum[-1]))
        out.append(Sample(_HIST + "_sum", labels[1], t.latency_sum_s))
        return out

    def _model(self) -> Iterator[Any]:
        ev = CounterMetricFamily("edgeship_model_events", "Model loads, failed loads, switches, rollbacks, "
                                 "reloads and unloads since start.", labels=["event"])
        for e, n in self.agent.model_events.snapshot().items():
            ev.add_metric([e.value], n)
        yield ev
        yield from self._memo("model", self.agent.current(), self._served)

    def _memo(self, what: str, source: Any, build: Callable[[Any], Iterator[Any]]) -> list[Any]:
        """The families ``build(source)`` made for the last scrape, while ``source`` is the same
        object (the served model, the journal as last read): made again as soon as it changes."""
        got = self._built.get(what)
        if got is None or got[0] is not source:
            got = (source, list(build(source)))
            self._built[what] = got
        return got[1]

    def _served(self, cur: Any) -> Iterator[Any]:
        ready = GaugeMetricFamily("edgeship_model_ready", "1 while a model is loaded and served.")
        ready.add_metric([], 1.0 if cur is not None else 0.0)
        yield ready
        info = InfoMetricFamily("edgeship_active_model", "The model being served.")
        if cur is not None:
            r = cur.ref
            info.add_metric([], {"name": r.name, "version": r.version, "release": str(r.release),
                                 "engine": r.engine, "precision": r.precision, "sha256": r.sha256})
        yield info
        agent = InfoMetricFamily("edgeship_agent", "The agent's version.")
        agent.add_metric([], {"version": __version__})
        yield agent

    def _update(self) -> Iterator[Any]:
        yield from self._memo("update", self.sampler.values.get("journal"), self._journal_families)

    def _journal_families(self, j: dict | None) -> Iterator[Any]:
        running = j is not None and j.get("state") in UPDATE_STATES
        st = StateSetMetricFamily("edgeship_update_state", "The OTA update state (idle: none running; the "
                                  f"update journal is read every {SAMPLE_INTERVAL_S:g} s).")
        current = j["state"] if running else "idle"
        st.add_metric([], {s: s == current for s in UPDATE_STATES})
        yield st
        if j is None:
            return
        last = next(((s, reason) for s, _, reason in reversed(j.get("history") or [])
                     if s in ("commit", "rolled_back", "failed", "aborted")), None)
        if last is not None:
            info = InfoMetricFamily("edgeship_update_last_result", "How the last finished OTA update ended.")
            info.add_metric([], {"model": str(j.get("model") or ""), "release": str(j.get("release") or ""),
                                 "state": last[0], "reason": str(last[1] or "")})
            yield info
        ts = _utc_seconds(j.get("updated_utc"))
        if ts is not None:
            g = GaugeMetricFamily("edgeship_update_last_timestamp_seconds",
                                  "When the update journal last changed (Unix time).")
            g.add_metric([], ts)
            yield g


class _JournalCache:
    """The update journal, re-read only when its mtime changes."""

    def __init__(self, path) -> None:
        self.path = path
        self._key: tuple | None = None
        self._value: dict | None = None

    def read(self) -> dict | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            try:
                value = json.loads(self.path.read_text())
            except (OSError, ValueError):
                value = None
            self._key, self._value = key, value if isinstance(value, dict) else None
        return self._value


def _utc_seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def make_registry(agent: Any) -> tuple[CollectorRegistry, AgentCollector]:
    """A registry with the agent's collector and the process families (RSS, CPU, fds, start time),
    sharing the collector's sampler; ``collector.close()`` stops its thread."""
    registry = CollectorRegistry(auto_describe=False)
    collector = AgentCollector(agent)
    registry.register(collector)
    registry.register(ProcessFamilies(sampler=collector.sampler))
    return registry, collector
