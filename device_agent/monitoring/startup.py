"""Wiring of monitoring into ``edgeship-agent run`` (called by :mod:`device_agent.serving.server`).

:func:`start_monitoring` makes the ``/metrics`` registry (unless ``serving.metrics_enabled`` is
false; with the capture families of :mod:`.capture_metrics`) and starts the drift monitor
(unless ``[drift] enabled`` is false);
:func:`attach_telemetry` adds the MQTT service's families to ``/metrics`` and makes the drift
monitor publish through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Monitoring:
    registry: Any = None   # prometheus_client CollectorRegistry, or None when /metrics is off
    collector: Any = None  # its AgentCollector
    drift: Any = None      # the started DriftMonitor, or None

    def stop(self) -> None:
        if self.drift is not None:
            self.drift.stop()
        if self.collector is not None:
            self.collector.close()


def start_monitoring(config: Any, agent: Any) -> Monitoring:
    m = Monitoring()
    if config.serving.metrics_enabled:
        from .collector import make_registry

        from .capture_metrics import CaptureCollector

        m.registry, m.collector = make_registry(agent)
        m.registry.register(CaptureCollector(agent))  # edgeship_capture_*, once [capture] has started
    section = config.section("drift")
    if section.enabled:
        from .drift import DriftMonitor

        m.drift = DriftMonitor(agent, section)
        if m.collector is not None:
            from .drift_publish import drift_source

            m.collector.add_source(drift_source(m.drift))
        m.drift.start()
    return m


def attach_telemetry(m: Monitoring, svc: Any) -> None:
    """``svc``: the running :class:`~device_agent.mqtt.service.TelemetryService`."""
    if m.collector is not None:
        from .telemetry import telemetry_source

        m.collector.add_source(telemetry_source(svc))
    if m.drift is not None:
        from .drift_publish import DriftPublisher

        m.drift.add_listener(DriftPublisher(svc, interval_s=svc.config.metrics_interval_s))
