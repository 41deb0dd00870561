"""Drift out of the device: metric families for ``/metrics`` and MQTT messages.

- :func:`drift_source` — a collector source: ``edgeship_drift_score{tensor,kind,score}``,
  ``edgeship_drift_alarm{tensor,kind,reason}`` (1 active, 0 judged and quiet),
  ``edgeship_drift_threshold{score}``, ``edgeship_drift_window_samples``,
  ``edgeship_drift_checks_total``, ``edgeship_drift_alarms_raised_total``,
  ``edgeship_drift_skipped_requests_total``, ``edgeship_drift_check_cpu_seconds_total``,
  ``edgeship_drift_sample_every_requests``, ``edgeship_drift_check_every_requests`` and, with a cost budget, ``edgeship_drift_cost_ratio``.
- :class:`DriftPublisher` — a monitor listener publishing the retained ``telemetry/drift``
  state (at most every ``interval_s``, and at once when an alarm changes) and every alarm
  transition as an ``events`` message (category ``drift``; queued durably).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from runtime.contracts.mqtt.messages import Kind
from runtime.contracts.mqtt.payloads import Severity
from runtime.contracts.mqtt.telemetry import drift_report
from runtime.drift.alarm import Transition

from .drift import METRICS, AlarmChange, DriftMonitor, DriftReport


def drift_source(monitor: DriftMonitor) -> Callable[[], Iterable[Any]]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    raised = [0]

    def count_raised(report, changes) -> None:
        raised[0] += sum(1 for c in changes if c.transition is Transition.RAISED)

    monitor.add_listener(count_raised)

    def collect() -> Iterable[Any]:
        r = monitor.latest
        score = GaugeMetricFamily("edgeship_drift_score", "Drift of the served model's live traffic against its "
                                  "bundle baseline, per tensor: psi, out_of_range_share, nonfinite_share, "
                                  "feature_psi_max (class mix and confidence: psi).",
                                  labels=["tensor", "kind", "score"])
        alarm = GaugeMetricFamily("edgeship_drift_alarm", "1 while a drift alarm is active (a score over its "
                                  "threshold for [drift] sustain_checks checks), else 0.",
                                  labels=["tensor", "kind", "reason"])
        threshold = GaugeMetricFamily("edgeship_drift_threshold", "Thresholds the drift scores are judged by.",
                                      labels=["score"])
        window = GaugeMetricFamily("edgeship_drift_window_samples", "Samples in the scored drift window.")
        if r is not None:
            active = set(r.alarms)
            for s in r.scores:
                for field in ("psi", "out_of_range_share", "nonfinite_share", "feature_psi_max"):
                    if s.kind in ("class", "confidence") and field != "psi":
                        continue
                    v = getattr(s, field)
                    if v is not None:
                        score.add_metric([s.name, s.kind, field], v)
                for _, _, code in METRICS:
                    if s.kind in ("class", "confidence") and code != "drift.psi":
                        continue
                    alarm.add_metric([s.name, s.kind, code], 1.0 if f"{code}:{s.kind}:{s.name}" in active else 0.0)
            for field, value in r.thresholds.to_json().items():
                threshold.add_metric([field], value)
            window.add_metric([], r.window_samples)
        yield from (score, alarm, threshold, window)
        checks = CounterMetricFamily("edgeship_drift_checks", "Drift checks of the served model since it was loaded.")
        checks.add_metric([], r.checks if r is not None else 0)
        yield checks
        n = CounterMetricFamily("edgeship_drift_alarms_raised", "Drift alarms raised since start.")
        n.add_metric([], raised[0])
        yield n
        sk = CounterMetricFamily("edgeship_drift_skipped_requests", "Requests not sketched because the drift "
                                 "checker lagged (bounded pending list).")
        sk.add_metric([], monitor.skipped)
        yield sk
        cpu = CounterMetricFamily("edgeship_drift_check_cpu_seconds", "CPU time of the drift checks (counting the "
                                  "sketched calls and scoring), on the checker thread's clock.")
        cpu.add_metric([], monitor.check_cpu_s)
        yield cpu
        for what, value, text in (("sample", monitor.schedule.sample_every, "one request in this many is sketched"),
                                  ("check", monitor.schedule.check_every, "a check every this many requests")):
            g = GaugeMetricFamily(f"edgeship_drift_{what}_every_requests", f"The drift schedule in force: {text} "
                                  "([drift], or sparser under max_cost_share).")
            g.add_metric([], value)
            yield g
        if monitor.cost_share is not None:
            share = GaugeMetricFamily("edgeship_drift_cost_ratio", "Drift's CPU per request / the model's inference "
                                      "time, measured at the last check under the schedule then in force (a re-plan it made "
                                      "applies from there on; [drift] max_cost_share on).")
            share.add_metric([], monitor.cost_share)
            yield share

    return collect


class DriftPublisher:
    """Publishes a monitor's reports and alarms through a telemetry service."""

    def __init__(self, svc: Any, *, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.svc = svc
        self.interval_s = interval_s
        self._clock = clock
        self._last = -1e18
        self._lock = threading.Lock()

    def __call__(self, report: DriftReport | None, changes: list[AlarmChange]) -> None:
        for c in changes:
            raised = c.transition is Transition.RAISED
            self.svc.emit_event(
                category="drift", severity=Severity.ALARM if raised else Severity.INFO,
                reason_code=c.reason_code if raised else f"{c.reason_code}.cleared",
                detail=(f"{c.kind} {c.name!r}: {c.reason_code.split('.', 1)[1]} {c.value:.3f} over {c.threshold:g} "
                        f"for the last checks" if raised else f"{c.kind} {c.name!r}: {c.reason_code} cleared"),
                context={"tensor": c.name, "kind": c.kind, "value": round(c.value, 6), "threshold": c.threshold,
                         "model": c.model})
        if report is None:
            return
        with self._lock:
            now = self._clock()
            if not changes and now - self._last < self.interval_s:
                return
            self._last = now
        self.svc.link.publish_direct(self.svc.topics.of(Kind.DRIFT), Kind.DRIFT, drift_report(report.to_json()))
