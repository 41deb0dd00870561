"""`edgeship fleet exporter`: the fleet's MQTT telemetry as one Prometheus endpoint.

Devices sit behind NAT and are not scraped: they publish over MQTT (docs/mqtt.md). The
exporter subscribes to every device's ``status``, ``desired``, ``telemetry/metrics`` and
``telemetry/drift`` (through :mod:`runtime.contracts.mqtt`), keeps the last reading of each
device (:class:`~.fleetstate.FleetState`: bounded, stale devices expire) and serves, at scrape
time (names in base units; per-device labels ``fleet``, ``device``):

- ``edgeship_fleet_device_online``, ``edgeship_fleet_device_info{model,version,release,wave}``
- ``edgeship_fleet_device_requests_total`` / ``_errors_total`` (summed from the windows received:
  ``rate()`` them), ``edgeship_fleet_device_request_rate`` / ``_error_ratio`` (last window)
- ``edgeship_fleet_device_latency_seconds{percentile}`` (the device's window p50/p95/p99)
- ``edgeship_fleet_device_drift_psi{tensor,kind}``, ``edgeship_fleet_device_drift_alarms``
- per release (``fleet``, ``model``, ``release``): ``edgeship_fleet_release_devices``,
  ``_request_rate``, ``_error_ratio``, ``_latency_p50_seconds`` (median of the devices' p50),
  ``_latency_p95_seconds`` (worst device), ``_drift_psi_max``
- per rollout (the controllers' retained ``_rollouts/{fleet}/{id}/state``):
  ``edgeship_fleet_rollout_wave{fleet,rollout,model,release,status}`` (the current wave),
  ``edgeship_fleet_rollout_wave_devices{fleet,rollout,wave,state}`` (assigned, committed, failed, pending)
- ``edgeship_fleet_exporter_messages_total{kind}``, ``_malformed_total{kind}`` (counted and
  skipped), ``_devices``, ``_expired_total``, ``_refused_total`` (over ``--max-devices``)
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any, Iterator

from .fleetstate import FleetState


class FleetCollector:
    def __init__(self, state: FleetState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.state
        with st.lock:
            devices = list(st.devices.values())
            rollouts = {k: doc for k, (doc, _) in st.rollouts.items()}
            messages, malformed = dict(st.messages), dict(st.malformed)
            expired, refused = st.expired, st.refused
        dl = ["fleet", "device"]
        g = {name: GaugeMetricFamily(f"edgeship_fleet_device_{name}", doc, labels=dl + extra) for name, doc, extra in (
            ("online", "1 while the device's retained status says online.", []),
            ("info", "The release the device serves and its rollout wave.", ["model", "version", "release", "wave"]),
            ("request_rate", "Requests per second in the device's last metrics window.", []),
            ("error_ratio", "Errors / requests in the device's last metrics window.", []),
            ("latency_seconds", "Latency percentiles (p50, p95, p99) of the device's last metrics window.",
             ["percentile"]),
            ("drift_psi", "The device's latest drift PSI per tensor (kind: input, output, class, confidence).",
             ["tensor", "kind"]),
            ("drift_alarms", "Drift alarms active on the device.", []))}
        req = CounterMetricFamily("edgeship_fleet_device_requests", "Requests reported by the device since the "
                                  "exporter first heard of it.", labels=dl)
        err = CounterMetricFamily("edgeship_fleet_device_errors", "Errors reported by the device since the "
                                  "exporter first heard of it.", labels=dl)
        releases: dict[tuple[str, str, str], list] = {}
        for d in devices:
            lv = [d.fleet, d.device]
            g["online"].add_metric(lv, 1.0 if d.online else 0.0)
            g["info"].add_metric(lv + [d.model, d.version, d.release, d.wave], 1.0)
            req.add_metric(lv, d.requests_total)
            err.add_metric(lv, d.errors_total)
            g["drift_alarms"].add_metric(lv, d.drift_alarms)
            for s in d.drift:
                g["drift_psi"].add_metric(lv + [s["name"], s["kind"]], float(s["psi"]))
            m = d.metrics
            if m is not None:
                g["request_rate"].add_metric(lv, m.requests / m.window_s)
                g["error_ratio"].add_metric(lv, m.errors / m.requests if m.requests else 0.0)
                for q, v in (("p50", m.p50_ms), ("p95", m.p95_ms), ("p99", m.p99_ms)):
                    if v is not None:
                        g["latency_seconds"].add_metric(lv + [q], v / 1e3)
            if d.online and d.model:
                releases.setdefault((d.fleet, d.model, d.release), []).append(d)
        yield from g.values()
        yield req
        yield err
        yield from _release_families(releases)
        yield from _rollout_families(rollouts)
        yield from _self_families(messages, malformed, len(devices), expired, refused)


def _release_families(releases: dict) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    rl = ["fleet", "model", "release"]
    fam = {name: GaugeMetricFamily(f"edgeship_fleet_release_{name}", doc, labels=rl) for name, doc in (
        ("devices", "Online devices serving the release."),
        ("request_rate", "Requests per second of the release's devices (last windows, summed)."),
        ("error_ratio", "Errors / requests over the release's devices' last windows."),
        ("latency_p50_seconds", "Median over the release's devices of their window p50."),
        ("latency_p95_seconds", "Worst window p95 among the release's devices."),
        ("drift_psi_max", "Highest drift PSI among the release's devices."))}
    for key, devs in sorted(releases.items()):
        lv = list(key)
        fam["devices"].add_metric(lv, len(devs))
        ms = [d.metrics for d in devs if d.metrics is not None]
        if ms:
            reqs, errs = sum(m.requests for m in ms), sum(m.errors for m in ms)
            fam["request_rate"].add_metric(lv, sum(m.requests / m.window_s for m in ms))
            fam["error_ratio"].add_metric(lv, errs / reqs if reqs else 0.0)
            p50 = [m.p50_ms for m in ms if m.p50_ms is not None]
            p95 = [m.p95_ms for m in ms if m.p95_ms is not None]
            if p50:
                fam["latency_p50_seconds"].add_metric(lv, statistics.median(p50) / 1e3)
            if p95:
                fam["latency_p95_seconds"].add_metric(lv, max(p95) / 1e3)
        psis = [float(s["psi"]) for d in devs for s in d.drift]
        if psis:
            fam["drift_psi_max"].add_metric(lv, max(psis))
    yield from fam.values()


def _rollout_families(rollouts: dict) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    wave = GaugeMetricFamily("edgeship_fleet_rollout_wave", "The wave a staged rollout is at (1-based).",
                             labels=["fleet", "rollout", "model", "release", "status"])
    per = GaugeMetricFamily("edgeship_fleet_rollout_wave_devices", "Devices of each rollout wave by state.",
                            labels=["fleet", "rollout", "wave", "state"])
    for (fleet, rid), doc in sorted(rollouts.items()):
        wave.add_metric([fleet, rid, str(doc.get("model", "")), str(doc.get("release", "")), doc["status"]],
                        doc["wave"])
        for w in doc["waves"]:
            for state in ("assigned", "committed", "failed", "pending"):
                v = w.get(state)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    per.add_metric([fleet, rid, str(w["wave"]), state], v)
    yield wave
    yield per


def _self_families(messages, malformed, n, expired, refused) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    msg = CounterMetricFamily("edgeship_fleet_exporter_messages", "MQTT messages received, by kind.", labels=["kind"])
    bad = CounterMetricFamily("edgeship_fleet_exporter_malformed", "Malformed messages counted and skipped, by kind.",
                              labels=["kind"])
    for k in messages:
        msg.add_metric([k], messages[k])
        bad.add_metric([k], malformed[k])
    yield msg
    yield bad
    dev = GaugeMetricFamily("edgeship_fleet_exporter_devices", "Devices the exporter keeps.")
    dev.add_metric([], n)
    yield dev
    exp = CounterMetricFamily("edgeship_fleet_exporter_expired", "Devices forgotten after going silent.")
    exp.add_metric([], expired)
    yield exp
    ref = CounterMetricFamily("edgeship_fleet_exporter_refused", "Devices not tracked: over --max-devices.")
    ref.add_metric([], refused)
    yield ref


class Exporter:
    """Subscribes with an operator client, feeds the state, serves /metrics. ``stop()`` ends it."""

    def __init__(self, settings: Any, *, fleets: list[str] | None, host: str, port: int,
                 stale_after_s: float, max_devices: int) -> None:
        from prometheus_client import start_http_server
        from prometheus_client.registry import CollectorRegistry

        from runtime.contracts.mqtt.topics import fleet_filter, rollouts_filter

        from .client import FleetClient

        self.state = FleetState(prefix=settings.prefix, stale_after_s=stale_after_s, max_devices=max_devices)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(self.state))
        self._stop = threading.Event()
        self.client = FleetClient(settings)
        leaves = ("status", "desired", "telemetry/metrics", "telemetry/drift")
        if fleets:
            filters = [fleet_filter(fleet=f, leaf=leaf, prefix=settings.prefix) for f in fleets for leaf in leaves]
            filters += [rollouts_filter(fleet=f, prefix=settings.prefix) for f in fleets]
        else:
            filters = [f"{settings.prefix}/+/+/{leaf}" for leaf in leaves] + [rollouts_filter(prefix=settings.prefix)]
        self.client.subscribe(*filters)
        self.server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self._consume, name="edgeship-exporter", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        next_expiry = time.monotonic() + 1.0
        while not self._stop.is_set():
            for msg in self.client.messages(timeout_s=0.5):
                try:
                    self.state.feed(msg.topic, msg.payload, time.monotonic())
                except Exception as e:  # noqa: BLE001 - one bad message must not end the consumer
                    print(f"edgeship fleet exporter: skipped a message on {msg.topic}: {type(e).__name__}: {e}",
                          file=sys.stderr)
                if self._stop.is_set():
                    return
            if time.monotonic() >= next_expiry:
                self.state.expire(time.monotonic())
                next_expiry = time.monotonic() + 1.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
