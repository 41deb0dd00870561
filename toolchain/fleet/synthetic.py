"""Synthetic device telemetry for the exporter's tests and benchmark: real payloads, many devices.

Every message is built with the contract's own builders (``runtime.contracts.mqtt.payloads``
and ``.telemetry``) and published on the device's real topic, so the exporter reads exactly
what agents send. It is not a device simulator (no agent, no updates, no commands; that is ``toolchain.fleet.sim``):
it publishes what the simulator does not, drift documents, and drives the exporter's tests
where exact counts are needed.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import Kind, retained
from runtime.contracts.mqtt.payloads import Origin
from runtime.contracts.mqtt.telemetry import drift_report
from runtime.contracts.mqtt.topics import DEFAULT_PREFIX, device_topics


class SyntheticFleet:
    """``n`` devices of ``fleet``; half on ``release`` and half on ``release - 1`` unless told."""

    def __init__(self, port: int, *, fleet: str = "sim", n: int = 1000, model: str = "digits", release: int = 2,
                 new_share: float = 0.5, prefix: str = DEFAULT_PREFIX, seed: int = 0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.fleet, self.model, self.prefix = fleet, model, prefix
        self.devices = [f"dev-{i:05d}" for i in range(n)]
        self.release = {d: release if i < n * new_share else release - 1 for i, d in enumerate(self.devices)}
        self.rng = np.random.default_rng(seed)
        self.msg_id = 0
        self.boot = uuid.uuid4().hex
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"edgeship-synthetic-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _publish(self, device: str, kind: Kind, body: dict, **levels: str) -> None:
        self.msg_id += 1
        origin = Origin(fleet=self.fleet, device=device, boot_id=self.boot, msg_id=self.msg_id,
                        ts_ms=int(time.time() * 1000), mono_ms=int(time.monotonic() * 1000))
        raw = payloads.stamp(payloads.encode(payloads.envelope(kind, origin, body)), seq=self.msg_id, hist=False)
        t = device_topics(fleet=self.fleet, device=device, prefix=self.prefix)
        self.client.publish(t.of(kind, **levels), raw, qos=1, retain=retained(kind))

    def _active(self, device: str) -> dict:
        r = self.release[device]
        return {"name": self.model, "version": f"1.{r}.0", "release": r, "sha256": f"{r:064x}",
                "engine": "onnxruntime", "precision": "fp32"}

    def birth(self, devices=None) -> None:
        for d in devices or self.devices:
            status = {"agent_version": "0.1.0", "engines": {"onnxruntime": "1.22"}, "active": self._active(d),
                      "previous": None, "ready": True}
            self._publish(d, Kind.STATUS, payloads.status_online(agent_status=status, groups=("sim",), conn=1))

    def metrics_round(self, devices=None, *, window_s: float = 10.0, error_rate: float = 0.0) -> None:
        for d in devices or self.devices:
            n = int(self.rng.integers(50, 150))
            p50 = float(self.rng.uniform(0.3, 0.6)) * (1.2 if self.release[d] == max(self.release.values()) else 1.0)
            body = payloads.metrics(
                window_s=window_s, requests=n, errors=int(n * error_rate),
                latency_ms={"p50": p50, "p95": p50 * 1.8, "p99": p50 * 2.5},
                system={"cpu_percent": 7.0, "rss_bytes": 90_000_000, "temperature_c": None},
                active_model=self._active(d), queue={"depth": 0, "bytes": 0, "dropped": {}, "inflight": 0,
                                                     "broker_rejected": 0})
            self._publish(d, Kind.METRICS, body)

    def drift_round(self, devices=None, *, psi: float = 0.02, alarm: bool = False) -> None:
        for d in devices or self.devices:
            scores = [{"name": "image", "kind": "input", "samples": 500, "psi": psi, "out_of_range_share": 0.0,
                       "nonfinite_share": 0.0, "feature_psi_max": psi * 2},
                      {"name": "logits", "kind": "class", "samples": 500, "psi": psi, "out_of_range_share": 0.0,
                       "nonfinite_share": 0.0, "feature_psi_max": None}]
            rep = {"model": self._active(d), "checks": 10, "window_samples": 500, "scores": scores,
                   "alarms": ["drift.psi:input:image"] if alarm else [],
                   "thresholds": {"psi": 0.25, "out_of_range_share": 0.05, "nonfinite_share": 0.0}}
            self._publish(d, Kind.DRIFT, drift_report(rep))

    def garbage(self, device: str, count: int) -> None:
        """``count`` malformed metrics messages (not JSON, wrong schema, inconsistent counts)."""
        t = device_topics(fleet=self.fleet, device=device, prefix=self.prefix)
        bad = [b"not json", b'{"schema":"edgeship.metrics/9"}', b'[1,2]',
               b'{"schema":"edgeship.metrics/1","window_s":10,"requests":1,"errors":5,"latency_ms":{}}']
        for i in range(count):
            self.client.publish(t.metrics, bad[i % len(bad)], qos=1)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker acknowledged everything published so far."""
        deadline = time.monotonic() + timeout_s
        info = self.client.publish(f"{self.prefix}/{self.fleet}/_flush", b"", qos=1)
        info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
