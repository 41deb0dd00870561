"""What the fleet exporter knows: the last telemetry of every device, bounded and expiring.

Pure bookkeeping (no network): :meth:`FleetState.feed` takes one MQTT message (topic,
payload, receive time) and updates the device it belongs to; documents are parsed by the
contract's strict parsers (``runtime.contracts.mqtt.telemetry``), and a malformed one is
counted by kind and skipped. :meth:`FleetState.expire` forgets devices not heard from for
``stale_after_s`` (their series disappear); at most ``max_devices`` are kept (newcomers
beyond it are counted as refused). Memory is O(devices), each a few hundred bytes plus its
last drift scores (at most ``MAX_SCORES``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.payloads import load_object
from runtime.contracts.mqtt.telemetry import MetricsReading, parse_drift, parse_metrics, parse_status
from runtime.contracts.mqtt.topics import DEFAULT_PREFIX, in_rollouts, split_device_topic, split_rollout_topic

#: a retained desired/rollout document larger than this is counted malformed, not parsed
MAX_DOC_BYTES = 1 << 20

#: drift scores kept per device (a model's inputs and outputs, their class and confidence)
MAX_SCORES = 32
#: rollouts kept (the controllers' retained state documents); the least recently updated go first
MAX_ROLLOUTS = 64
KINDS = ("status", "metrics", "drift", "desired", "rollout")


@dataclass
class Device:
    fleet: str
    device: str
    last_seen: float
    online: bool = False
    model: str = ""
    version: str = ""
    release: str = ""
    wave: str = ""
    metrics: MetricsReading | None = None
    requests_total: int = 0
    errors_total: int = 0
    drift: list[dict] = field(default_factory=list)
    drift_alarms: int = 0


class FleetState:
    def __init__(self, *, prefix: str = DEFAULT_PREFIX, stale_after_s: float = 300.0,
                 max_devices: int = 20_000) -> None:
        self.prefix = prefix
        self.stale_after_s = stale_after_s
        self.max_devices = max_devices
        self.lock = threading.Lock()
        self.devices: dict[tuple[str, str], Device] = {}
        #: (fleet, rollout id) -> (the controller's retained state document, when last heard)
        self.rollouts: dict[tuple[str, str], tuple[dict, float]] = {}
        self.messages = {k: 0 for k in KINDS}
        self.malformed = {k: 0 for k in KINDS}
        self.expired = 0
        self.refused = 0

    def feed(self, topic: str, payload: bytes, now: float) -> None:
        if in_rollouts(topic, prefix=self.prefix):  # never a device's, well formed or not
            return self._rollout(topic, payload, now)
        parts = split_device_topic(topic, prefix=self.prefix)
        if parts is None:
            return
        fleet, device, leaf = parts
        kind = {"status": "status", "telemetry/metrics": "metrics", "telemetry/drift": "drift",
                "desired": "desired"}.get(leaf)
        if kind is None:
            return
        with self.lock:
            self.messages[kind] += 1
            if not payload:  # a cleared retained topic (fleet forget)
                return
            try:
                self._apply(fleet, device, kind, payload, now)
            except PayloadRejected:
                self.malformed[kind] += 1

    def _device(self, fleet: str, device: str, now: float) -> Device | None:
        d = self.devices.get((fleet, device))
        if d is None:
            if len(self.devices) >= self.max_devices:
                self.refused += 1
                return None
            d = self.devices[(fleet, device)] = Device(fleet, device, now)
        d.last_seen = now
        return d

    def _apply(self, fleet: str, device: str, kind: str, payload: bytes, now: float) -> None:
        if kind == "status":
            doc = parse_status(payload)
            d = self._device(fleet, device, now)
            if d is not None:
                d.online = doc["online"]
                _active(d, doc.get("active"))
        elif kind == "metrics":
            m = parse_metrics(payload)
            d = self._device(fleet, device, now)
            if d is not None:
                d.metrics, d.online = m, True
                d.requests_total += m.requests
                d.errors_total += m.errors
                if m.model:
                    d.model, d.release, d.version = m.model, str(m.release or ""), m.version or ""
        elif kind == "drift":
            doc = parse_drift(payload)
            d = self._device(fleet, device, now)
            if d is not None:
                d.drift = [s for s in doc["scores"]][:MAX_SCORES]
                d.drift_alarms = len(doc.get("alarms") or [])
        else:  # desired: the rollout wave the operator put the device in, when it says so
            doc = _desired(payload)
            d = self.devices.get((fleet, device))
            if d is not None:
                rollout = doc.get("rollout") if isinstance(doc.get("rollout"), dict) else {}
                wave = rollout.get("wave", doc.get("wave"))
                d.wave = str(wave) if isinstance(wave, (int, str)) and not isinstance(wave, bool) else ""

    def _rollout(self, topic: str, payload: bytes, now: float) -> None:
        """A rollout controller's retained state (``{prefix}/_rollouts/{fleet}/{id}/state``)."""
        parts = split_rollout_topic(topic, prefix=self.prefix)
        if parts is None or parts[2] != "state":
            return
        key = parts[:2]  # (fleet, rollout id)
        with self.lock:
            self.messages["rollout"] += 1
            if not payload:
                self.rollouts.pop(key, None)
                return
            try:
                doc = _rollout_doc(payload)
            except PayloadRejected:
                self.malformed["rollout"] += 1
                return
            self.rollouts.pop(key, None)
            if len(self.rollouts) >= MAX_ROLLOUTS:
                del self.rollouts[next(iter(self.rollouts))]
            self.rollouts[key] = (doc, now)

    def expire(self, now: float) -> int:
        """Forget devices and rollouts silent for ``stale_after_s``; returns how many devices."""
        with self.lock:
            gone = [k for k, d in self.devices.items() if now - d.last_seen > self.stale_after_s]
            for k in gone:
                del self.devices[k]
            self.expired += len(gone)
            for k in [k for k, (_, seen) in self.rollouts.items() if now - seen > self.stale_after_s]:
                del self.rollouts[k]
            return len(gone)


def _active(d: Device, active: Any) -> None:
    if isinstance(active, dict) and isinstance(active.get("name"), str):
        d.model = active["name"]
        d.release = str(active.get("release") or "")
        d.version = str(active.get("version") or "")


def _rollout_doc(payload: bytes) -> dict:
    """A rollout state document (``edgeship.rollout/1``): id, model, release, status, wave, waves."""
    doc = _object(payload, "rollout state")
    ok = (isinstance(doc, dict) and doc.get("schema") == "edgeship.rollout/1" and isinstance(doc.get("wave"), int)
          and isinstance(doc.get("waves"), list) and isinstance(doc.get("status"), str)
          and all(isinstance(w, dict) and isinstance(w.get("wave"), int) for w in doc["waves"]))
    if not ok:
        raise PayloadRejected("payload.schema", "rollout state: not an edgeship.rollout/1 document")
    return doc


def _object(payload: bytes, what: str) -> dict:
    """The shared inbound parser (size bound, nesting depth, an object); empty is not JSON."""
    if not payload:
        raise PayloadRejected("payload.not_json", f"{what}: empty payload")
    return load_object(payload, max_bytes=MAX_DOC_BYTES, what=what)


def _desired(payload: bytes) -> dict:
    doc = _object(payload, "desired")
    signed = doc.get("signed")
    if isinstance(signed, dict) and isinstance(signed.get("body"), dict):  # the operator-signed envelope
        return signed["body"]
    return doc
