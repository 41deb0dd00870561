"""One simulated device: the agent's control plane and telemetry, without a model.

It speaks the agent's protocol through the same contracts code: operator messages are
checked by ``runtime.contracts.mqtt.signing.verify`` (the agent's checks, its replay rule),
desired state follows the agent's version rules, the release-counter rule and the penalty
box; what it sends is built by ``runtime.contracts.mqtt.payloads``. Updates and inference
are simulated per :class:`~.behaviour.SimBehaviour` (the outcome of an update, the latency
and error rate of each release, crashes, drift: the retained ``telemetry/drift`` state and
the ``drift`` alarm events of an agent whose bundle carries a drift baseline, judged by the
agent's alarm rule ``runtime.drift.alarm.step``).

Pure of I/O: every method returns *effects* (:class:`Publish`, :class:`After`) that the
runner (:mod:`.fleet`) carries out, so a thousand devices share a few MQTT connections.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from runtime.contracts.bundle.baseline import DriftThresholds
from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import Kind, Sender, match_leaf
from runtime.contracts.mqtt.signing import OperatorKeys, Recipient, ReplayState, verify
from runtime.contracts.mqtt.telemetry import drift_report
from runtime.drift.alarm import AlarmState, Transition, step as alarm_step
from runtime.drift.sketch import Score

from .behaviour import SimBehaviour

STATES = ("fetch", "verify", "stage", "gate", "switch", "trial")
#: checks over the PSI threshold before a drift alarm raises (and under before it clears): the agent's default
DRIFT_SUSTAIN = 3


@dataclass
class Publish:
    leaf: str                     # topic under the device (or a full topic with ``topic``)
    kind: Kind
    body: dict
    topic: str | None = None
    properties: Any = None


@dataclass
class After:
    delay_s: float
    fn: Callable[[], list]


def ref(model: str, release: int) -> dict:
    return {"name": model, "release": release, "version": f"1.0.{release}", "sha256": f"sim-{model}-{release}",
            "engine": "onnxruntime", "precision": "fp32"}


@dataclass
class SimDevice:
    name: str
    fleet: str
    behaviour: SimBehaviour
    keys: OperatorKeys
    model: str
    release: int
    groups: tuple[str, ...] = ()
    arch: str = "x86_64"
    online: bool = True
    conn: int = 0
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    applied_version: int = 0
    desired: dict | None = None
    last_deployment: dict | None = None
    rejected: list = field(default_factory=list)
    previous: int | None = None
    ran: set = field(default_factory=set)
    boxed: dict = field(default_factory=dict)
    replay: ReplayState = field(default_factory=ReplayState)
    running: payloads.Desired | None = None
    pending: payloads.Desired | None = None
    clock: Callable[[], float] = None  # wall clock (s); set by the runner
    refused: int = 0
    drift_on: int | None = None           # the release the drift state is about (a switch starts afresh)
    drift_checks: int = 0
    drift_alarm: AlarmState = field(default_factory=AlarmState)

    def __post_init__(self) -> None:
        self.ran = {self.release}
        self.rng = random.Random(f"{self.behaviour.seed}/{self.name}")

    # ------------------------------------------------------------ what the agent publishes
    def _status(self) -> dict:
        return {"agent_version": "sim", "engines": ["onnxruntime"], "arch": self.arch,
                "active": ref(self.model, self.release),
                "previous": ref(self.model, self.previous) if self.previous else None, "ready": True}

    def birth(self) -> list:
        self.conn += 1
        return [Publish("status", Kind.STATUS, payloads.status_online(agent_status=self._status(), groups=self.groups,
                                                                    conn=self.conn)), self.reported()]

    def death(self, reason: str) -> Publish:
        return Publish("status", Kind.STATUS, payloads.status_offline(conn=self.conn, groups=self.groups, reason=reason))

    def reported(self) -> Publish:
        boxed = [{"model": self.model, "release": r, "sha256": ref(self.model, r)["sha256"], "reason": why,
                  "skips": 0} for r, why in sorted(self.boxed.items())]
        return Publish("reported", Kind.REPORTED, payloads.reported(
            applied_version=self.applied_version, desired=self.desired, agent_status=self._status(),
            rejected=self.rejected[-20:], last_deployment=self.last_deployment, penalty_box=boxed))

    def metrics(self, window_s: float) -> list:
        b = self.behaviour
        n = max(0, int(round(self.rng.gauss(b.requests_per_s * window_s, math.sqrt(b.requests_per_s * window_s)))))
        p_err = b.error_rate(self.release)
        errors = sum(1 for _ in range(n) if self.rng.random() < p_err) if n < 2000 else \
            max(0, int(round(self.rng.gauss(n * p_err, math.sqrt(n * p_err * (1 - p_err))))))
        p95 = b.p95_ms(self.release) * math.exp(self.rng.gauss(0.0, 0.05))
        lat = {"p50": p95 / 1.8, "p95": p95, "p99": p95 * 1.4} if n > errors else {"p50": None, "p95": None, "p99": None}
        out = [Publish("telemetry/metrics", Kind.METRICS, payloads.metrics(
            window_s=window_s, requests=n, errors=errors, latency_ms=lat,
            system={"cpu_percent": 5.0, "rss_bytes": 80 << 20, "temperature_c": None},
            active_model=ref(self.model, self.release), queue={"depth": 0, "bytes": 0, "dropped": {}}))]
        if b.drift_baseline:
            out += self.drift(n)
        if self.rng.random() < b.crash_probability(self.release, window_s):
            out += [self.death("connection lost"), After(1.0, self._restart)]
        return out

    def drift(self, samples: int) -> list:
        """One drift check of the served model: the retained ``telemetry/drift`` state, and an
        ``events`` message (category ``drift``) when its alarm raises or clears, as the agent's
        DriftPublisher sends them. A drifting device's input PSI is ~0.6, a quiet one's ~0.02."""
        th, m = DriftThresholds(), ref(self.model, self.release)
        model = {k: m[k] for k in ("name", "version", "release", "sha256")}
        out = []
        if self.drift_on != self.release:  # a model switch: a fresh sketch, the old model's alarm cleared
            if self.drift_alarm.active:
                out.append(self._drift_event(False, 0.0, th.psi, model))
            self.drift_on, self.drift_checks, self.drift_alarm = self.release, 0, AlarmState()
        self.drift_checks += 1
        psi = (0.6 if self.behaviour.drifts(self.name, self.release) else 0.02) * math.exp(self.rng.gauss(0.0, 0.2))
        self.drift_alarm, change = alarm_step(self.drift_alarm, psi > th.psi, sustain=DRIFT_SUSTAIN)
        if change is not None:
            out.append(self._drift_event(change is Transition.RAISED, psi, th.psi, model))
        report = {"model": model, "checks": self.drift_checks, "window_samples": samples,
                  "scores": [Score("x", "input", samples, psi).to_json()],
                  "alarms": ["drift.psi:input:x"] if self.drift_alarm.active else [],
                  "thresholds": th.to_json(), "skipped_requests": 0}
        return [Publish("telemetry/drift", Kind.DRIFT, drift_report(report))] + out

    def _drift_event(self, raised: bool, value: float, threshold: float, model: dict) -> Publish:
        sev = payloads.Severity.ALARM if raised else payloads.Severity.INFO
        detail = (f"input 'x': psi {value:.3f} over {threshold:g} for the last checks" if raised
                  else "input 'x': drift.psi cleared")
        return self._event("drift", sev, "drift.psi" if raised else "drift.psi.cleared", detail,
                           {"tensor": "x", "kind": "input", "value": round(value, 6), "threshold": threshold,
                            "model": model})

    def _restart(self) -> list:
        self.boot_id = uuid.uuid4().hex
        return self.birth() if self.online else []

    # ------------------------------------------------------------ what the agent receives
    def receive(self, leaf: str, raw: bytes, properties: Any = None) -> list:
        """One message on ``leaf`` (under this device's topics): the agent's door, then the handler."""
        found = match_leaf(leaf, sender=Sender.OPERATOR)
        if found is None or (leaf == "desired" and not raw):
            return []
        spec, levels = found
        try:
            doc = payloads.load_object(raw, max_bytes=16384, what=f"{leaf} message")
            v = verify(doc, keys=self.keys, leaf=leaf, schema=spec.kind.schema,
                       me=Recipient(self.fleet, self.name, self.groups), now_ms=int(self.clock() * 1000),
                       replay=self.replay)
        except PayloadRejected as e:
            self.refused += 1
            return [self._event("control", payloads.Severity.ALARM, e.reason_code, f"{leaf} rejected: {e.detail}")]
        self.replay = self.replay.accept(v)
        if spec.kind is Kind.DESIRED:
            return self._on_desired(dict(v.body))
        if not v.fresh:
            return []
        return self._command(levels.get("name") or leaf.rsplit("/", 1)[-1], dict(v.body), properties)

    def _event(self, category: str, severity, code: str, detail: str, context: dict | None = None) -> Publish:
        return Publish("events", Kind.EVENT, payloads.event(category=category, severity=severity, reason_code=code,
                                                          detail=detail, context=context))

    def _on_desired(self, body: dict) -> list:
        try:
            d = payloads.desired_from(body)
        except PayloadRejected as e:
            return [self._event("control", payloads.Severity.WARNING, e.reason_code, e.detail)]
        newest = max([self.applied_version] + [x.version for x in (self.running, self.pending) if x])
        if d.version <= newest:
            return []
        if self.running is not None:
            self.pending = d
            return []
        return self._start(d)

    def _record(self, d: payloads.Desired, state: str, code: str | None, detail: str) -> dict:
        return {"deployment_id": d.deployment_id, "model": d.model, "release": d.release, "version": d.version,
                "state": state, "reason_code": code, "detail": detail, "ts_ms": int(self.clock() * 1000)}

    def _deploy(self, d: payloads.Desired, state: str, code: str | None = None, detail: str = "") -> Publish:
        return Publish(f"deploy/{d.deployment_id}", Kind.DEPLOY, payloads.deploy_event(
            deployment_id=d.deployment_id, model=d.model, release=d.release, state=state, reason_code=code,
            detail=detail, event_ts=self.clock()))

    def _start(self, d: payloads.Desired) -> list:
        self.applied_version, self.desired = d.version, d.to_json()
        if d.model == self.model and d.release == self.release:
            self.last_deployment = self._record(d, "commit", None, "release already active")
            return [self._deploy(d, "commit", None, "release already active"), self.reported()]
        self.running = d
        self.last_deployment = self._record(d, "accepted", None, "deployment started")
        out = [self._deploy(d, "accepted", None, "deployment started"), self.reported()]
        step = self.behaviour.install_s / (len(STATES) + 1)
        refusal = self._refusal(d)
        for i, st in enumerate(STATES):
            if refusal is not None and refusal[0] == st:
                final = "rolled_back" if st == "trial" else "failed"
                out.append(After(step * (i + 1), lambda final=final, code=refusal[1], det=refusal[2]:
                                 self._end(d, final, code, det)))
                return out
            out.append(After(step * (i + 1), lambda st=st: [self._deploy(d, st)]))
        out.append(After(step * (len(STATES) + 1), lambda: self._end(d, "commit", None, "simulated trial passed")))
        return out

    def _refusal(self, d: payloads.Desired) -> tuple[str, str, str] | None:
        """The simulated reason an update of ``d`` fails (state, code, detail), or None."""
        b = self.behaviour
        floor = max(self.ran | {self.release, self.previous or 0})
        if d.release in self.boxed:
            return "fetch", "penalty.boxed", f"release {d.release} failed here before ({self.boxed[d.release]})"
        if d.release <= floor and d.release not in self.ran:
            return "fetch", "security.release_rollback", f"release {d.release} is not above {floor}"
        if b.gate_fails(self.name, d.release):
            return "gate", "gate.tolerance", "simulated: golden outputs out of tolerance"
        if b.trial_fails(self.name, d.release):
            return "trial", "trial.error_rate", "simulated: trial error rate over the limit"
        return None

    def _end(self, d: payloads.Desired, state: str, code: str | None, detail: str) -> list:
        self.running = None
        if state == "commit":
            self.previous, self.release = self.release, d.release
            self.model = d.model
            self.ran.add(d.release)
        elif code and code.startswith(("gate.", "trial.")):
            self.boxed[d.release] = code
        rec = self._record(d, state, code, detail)
        self.last_deployment = rec
        if state != "commit":
            self.rejected.append(rec)
        out = [self._deploy(d, state, code, detail)]
        if code and code.startswith(("gate.", "trial.")):
            out.append(self._event(code.split(".")[0], payloads.Severity.WARNING, code, detail,
                                   {"deployment_id": d.deployment_id, "release": d.release}))
        out.append(self.reported())
        if self.pending is not None:
            nxt, self.pending = self.pending, None
            out += self._start(nxt)
        return out

    # ------------------------------------------------------------ commands
    def _command(self, name: str, body: dict, properties: Any) -> list:
        ok, code, detail, result = True, None, "", {}
        if name == "rollback":
            if self.running is not None or self.previous is None:
                ok, code, detail = False, "rollback.refused", "busy or no previous model"
            else:
                self.release, self.previous = self.previous, self.release
                detail = "rolled back to the previous model"
        elif name == "rebirth":
            detail = "birth and reported state republished"
        elif name == "retry":
            rel = body.get("release")
            ok = rel in self.boxed
            if ok:
                del self.boxed[rel]
            code, detail = (None, f"release {rel} taken out of the penalty box") if ok else \
                ("retry.not_boxed", f"release {rel} is not in the penalty box")
        elif name == "cancel":
            ok, code, detail = False, "cancel.nothing_running", "simulated updates are not cancelled"
        else:
            ok, code, detail = False, "cmd.unknown", f"unknown command {name!r}"
        resp = getattr(properties, "ResponseTopic", None) if properties is not None else None
        out = [Publish(f"cmd/{name}/resp", Kind.CMD_RESPONSE, payloads.command_response(
            command=name, ok=ok, reason_code=code, detail=detail, result=result), topic=resp, properties=properties)]
        return out + ([self.reported()] if ok else [])
