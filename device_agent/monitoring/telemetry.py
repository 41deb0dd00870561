"""Metric families of the MQTT telemetry service: broker connection, durable queue, drops.

A source for :meth:`~.collector.AgentCollector.add_source`; reads the running service's
queue figures at scrape time from memory (the queue keeps its depth, bytes, drop counts and
oldest row up to date at each commit: no SQLite query, no wait for a commit in progress).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def telemetry_source(svc: Any) -> Callable[[], Iterable[Any]]:
    """A source reading ``svc`` (a :class:`~device_agent.mqtt.service.TelemetryService`)."""

    def collect() -> Iterable[Any]:
        qs = svc.queue.stats()
        g = GaugeMetricFamily("edgeship_telemetry_connected", "1 while the MQTT broker connection is up.")
        g.add_metric([], 1.0 if svc.link.connected else 0.0)
        yield g
        depth = GaugeMetricFamily("edgeship_telemetry_queue_depth", "Messages in the durable telemetry queue.")
        depth.add_metric([], qs.depth)
        yield depth
        size = GaugeMetricFamily("edgeship_telemetry_queue_bytes", "Payload bytes in the durable telemetry queue.")
        size.add_metric([], qs.bytes)
        yield size
        age = GaugeMetricFamily("edgeship_telemetry_queue_oldest_age_seconds",
                                "Age of the oldest queued message (0 when empty).")
        age.add_metric([], svc.queue.oldest_age_s() or 0.0)
        yield age
        inflight = GaugeMetricFamily("edgeship_telemetry_inflight", "QoS 1 messages sent, not yet acknowledged.")
        inflight.add_metric([], svc.link.inflight_count())
        yield inflight
        dropped = CounterMetricFamily("edgeship_telemetry_dropped", "Queued messages dropped over their disk "
                                      "budget, by class.", labels=["class"])
        for cls, n in sorted(qs.dropped.items()):
            dropped.add_metric([cls], n)
        yield dropped

    return collect
