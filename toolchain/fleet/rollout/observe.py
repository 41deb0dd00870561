"""What the controller knows about the fleet, from what the devices publish (never assumed).

:class:`FleetView` is fed every MQTT message of the fleet (retained ``status``, ``reported``,
``desired``, ``telemetry/drift``; streams ``deploy/+`` and ``telemetry/metrics``) and keeps, per
device, the last valid documents, and per cohort (:class:`~.health.CohortStats`) the sums of
the metrics windows since the evaluation epoch (the rollout's start or its last resume) and
the devices whose latest drift report (sent since the epoch, for the release the device
serves now) has an active alarm. A document that is not what the protocol says (not JSON,
wrong types, an impossible state) marks the device *invalid* with the reason: the rollout
counts it as failed and names it; nothing raises out of :meth:`FleetView.feed`.

Restarts: a birth whose ``boot_id`` differs from the last one, or whose connection number
went down (a new agent process), counts one restart for the release the device runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.telemetry import parse_drift
from runtime.contracts.mqtt.topics import split_device_topic

from .health import CohortStats

DEPLOY_STATES = frozenset({"accepted", "fetch", "verify", "stage", "gate", "switch", "trial", "commit",
                           "rolled_back", "failed", "aborted"})


@dataclass
class DeviceObs:
    status: dict | None = None
    reported: dict | None = None
    desired: dict | None = None          # the body of the retained desired document
    deploy: dict | None = None           # the last deploy event of one of the rollout's deployments
    drift: dict | None = None            # the last valid telemetry/drift document
    invalid: str | None = None
    restarts: int = 0

    @property
    def online(self) -> bool:
        return bool(self.status and self.status.get("online"))

    @property
    def active(self) -> dict:
        a = (self.reported or {}).get("active") or (self.status or {}).get("active")
        return a if isinstance(a, dict) else {}

    def next_version(self) -> int:
        """One above every desired version the device or its retained desired mention."""
        seen = [v for v in ((self.desired or {}).get("version"), (self.reported or {}).get("applied_version"))
                if isinstance(v, int) and not isinstance(v, bool)]
        return max(seen, default=0) + 1


def _is_int(v: Any, *, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_reported(doc: Any) -> str | None:
    """Why a reported document is impossible, or None."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if not _is_int(doc.get("applied_version")):
        return f"applied_version {doc.get('applied_version')!r} is not an integer >= 0"
    active = doc.get("active")
    if active is not None and (not isinstance(active, dict) or not _is_int(active.get("release"), low=1)
                               or not isinstance(active.get("name"), str)):
        return f"active {active!r} is not a model with a name and a release >= 1"
    last = doc.get("last_deployment")
    if last is not None and (not isinstance(last, dict) or last.get("state") not in DEPLOY_STATES | {"unknown"}):
        return f"last_deployment state {(last or {}).get('state') if isinstance(last, dict) else last!r} is not a state"
    return None


def _check_metrics(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "not a JSON object"
    req, err, win = doc.get("requests"), doc.get("errors"), doc.get("window_s")
    if not _is_int(req) or not _is_int(err) or err > req:
        return f"requests {req!r} / errors {err!r} are not counts with errors <= requests"
    if not isinstance(win, (int, float)) or isinstance(win, bool) or not win > 0:
        return f"window_s {win!r} is not a positive number"
    p95 = (doc.get("latency_ms") or {}).get("p95") if isinstance(doc.get("latency_ms"), dict) else None
    if p95 is not None and (not isinstance(p95, (int, float)) or isinstance(p95, bool) or p95 < 0):
        return f"latency_ms.p95 {p95!r} is not a number >= 0"
    return None


class FleetView:
    """The devices of one fleet and the two cohorts of one rollout (``model`` ``release``)."""

    def __init__(self, *, prefix: str, fleet: str, model: str, release: int, deployments: set[str]) -> None:
        self.prefix, self.fleet, self.model, self.release = prefix, fleet, model, release
        self.deployments = set(deployments)
        self.devices: dict[str, DeviceObs] = {}
        self.targets: set[str] = set()
        self.epoch_ms = 0
        self.new, self.control = CohortStats(), CohortStats()
        self.messages = 0
        self._drift_in: dict[str, tuple[bool, bool, float]] = {}   # device -> (new?, alarmed, max psi) counted

    def reset_epoch(self, ms: int) -> None:
        """Judge model health on what arrives from ``ms`` on (the rollout's start, a resume)."""
        self.epoch_ms = ms
        self.new, self.control = CohortStats(), CohortStats()
        self._drift_in = {}
        for d in self.devices:
            self._drift_count(d)

    def obs(self, device: str) -> DeviceObs:
        return self.devices.setdefault(device, DeviceObs())

    def feed(self, topic: str, payload: bytes) -> None:
        """One message; never raises (a bad document marks its device invalid)."""
        parts = split_device_topic(topic, prefix=self.prefix)
        if parts is None or parts[0] != self.fleet:
            return
        _, device, leaf = parts
        self.messages += 1
        if not payload:  # a retained topic cleared (fleet forget, an aborted rollout)
            if leaf in ("desired", "reported", "status"):
                setattr(self.obs(device), leaf, None)
            elif leaf == "telemetry/drift":
                self.obs(device).drift = None
                self._drift_count(device)
            return
        try:
            if leaf == "telemetry/drift":  # its strict parser reads the bytes
                self._drift(device, payload)
                return
            try:
                doc = json.loads(payload)
            except (UnicodeDecodeError, ValueError):
                doc = _Garbage
            self._feed(device, leaf, doc)
        except Exception as e:  # noqa: BLE001 - a device's garbage must never stop the controller
            self.obs(device).invalid = f"{leaf}: unreadable ({type(e).__name__}: {e})"

    def _feed(self, device: str, leaf: str, doc: Any) -> None:
        o = self.obs(device)
        if leaf == "status":
            if isinstance(doc, dict):
                self._status(o, doc)
                self._drift_count(device)
        elif leaf == "reported":
            why = _check_reported(doc) if doc is not _Garbage else "not JSON"
            if why:
                o.invalid = f"reported: {why}"
            else:
                o.reported, o.invalid = doc, None
                self._drift_count(device)
        elif leaf == "desired":
            body = doc.get("signed", {}).get("body") if isinstance(doc, dict) else None
            o.desired = body if isinstance(body, dict) else None
        elif leaf.startswith("deploy/"):
            if leaf[len("deploy/"):] in self.deployments and isinstance(doc, dict):
                if doc.get("state") not in DEPLOY_STATES:
                    o.invalid = f"deploy: state {doc.get('state')!r} is not a state"
                else:
                    o.deploy = doc
        elif leaf == "telemetry/metrics":
            why = _check_metrics(doc) if doc is not _Garbage else "not JSON"
            if why:
                o.invalid = f"metrics: {why}"
            else:
                self._metrics(device, doc)

    def _status(self, o: DeviceObs, doc: dict) -> None:
        old = o.status
        if doc.get("online") and old and old.get("online") is not None:
            boot, conn = doc.get("boot_id"), doc.get("conn")
            if boot != old.get("boot_id") or (_is_int(conn) and _is_int(old.get("conn")) and conn < old["conn"]):
                o.restarts += 1
                if (doc.get("ts_ms") or 0) >= self.epoch_ms:
                    self._cohort(o.active)(lambda c: setattr(c, "restarts", c.restarts + 1))
        o.status = doc

    def _cohort(self, active: dict):
        def apply(fn) -> None:
            if active.get("name") != self.model:
                return
            fn(self.new if active.get("release") == self.release else self.control)
        return apply

    def _metrics(self, device: str, doc: dict) -> None:
        if device not in self.targets or (doc.get("ts_ms") or 0) < self.epoch_ms:
            return
        active = doc.get("active_model") if isinstance(doc.get("active_model"), dict) else {}
        p95 = (doc.get("latency_ms") or {}).get("p95")
        self._cohort(active)(lambda c: c.add_window(requests=doc["requests"], errors=doc["errors"],
                                                    window_s=float(doc["window_s"]), p95_ms=p95))

    def _drift(self, device: str, payload: bytes) -> None:
        """A report is kept only once everything the count reads of it was read (:func:`_drift_entry`),
        so a kept report never raises in :meth:`_drift_count` (nor at a resume, :meth:`reset_epoch`)."""
        try:
            doc = parse_drift(payload)
        except PayloadRejected as e:
            self.obs(device).invalid = e.detail if e.detail.startswith("drift") else f"drift: {e.detail}"
            return
        _drift_entry(doc, self.release)  # raises (caught by feed: the device marked invalid) before it is kept
        self.obs(device).drift = doc
        self._drift_count(device)

    def _drift_count(self, device: str) -> None:
        """Count the device's latest drift report in its cohort (uncounting what it counted before):
        a target, sent since the epoch, for this model and the release the device serves now."""
        old = self._drift_in.pop(device, None)
        if old is not None:
            (self.new if old[0] else self.control).add_drift(alarmed=old[1], psi_max=old[2], sign=-1)
        o = self.devices.get(device)
        doc = o.drift if o is not None else None
        if doc is None or device not in self.targets:
            return
        ts, name, release, entry = _drift_entry(doc, self.release)
        active = o.active
        if ts < self.epoch_ms or name != self.model or active.get("name") != self.model \
                or active.get("release") != release:
            return  # old, another model, or a report of the release it ran before (the new one has not reported yet)
        self._drift_in[device] = entry
        (self.new if entry[0] else self.control).add_drift(alarmed=entry[1], psi_max=entry[2])


def _drift_entry(doc: dict, release: int) -> tuple[int, Any, Any, tuple[bool, bool, float]]:
    """All the count reads of a drift report (checked by ``parse_drift``): (ts_ms, model name,
    model release, (a report of the rollout's ``release``?, alarmed, its highest psi))."""
    model, psi_max = doc["model"], max((float(s["psi"]) for s in doc["scores"]), default=0.0)
    return (doc["ts_ms"], model.get("name"), model.get("release"),
            (model.get("release") == release, bool(doc.get("alarms")), psi_max))


_Garbage = object()
