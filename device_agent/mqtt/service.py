"""The telemetry/control service: binds the agent, the updater, the durable queue and the
MQTT link. Started by :func:`device_agent.mqtt.start`.

Threads: paho's network thread (callbacks), the link's sender, one metrics/heartbeat ticker,
and one deployment worker (a single update at a time; a newer desired document cancels the
running update if it has not switched yet and runs next).

Inbound operator messages pass :class:`~.inbound.ControlGate` first (signature, addressee,
expiry, replay); refusals are reported on ``events`` through a rate limiter.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import Kind
from runtime.contracts.mqtt.payloads import Desired, Severity
from runtime.contracts.mqtt.signing import Recipient
from runtime.contracts.statedir import QueueDir

from . import control
from .commands import answer_refused, run_command
from .config import MqttConfig
from .control import ControlState, ControlStore, Decision
from .errors import QueueError
from ..agent.metrics import RequestWindow
from .inbound import ControlGate, RefusalLimiter, ControlMessageRefused
from .link import MqttLink
from .queue import Budgets, DurableQueue, MessageClass
from .system import ProcessSampler
from .trust import OperatorTrust, ReplayStore
from ..ota.releases import Authority

log = logging.getLogger("edgeship.telemetry")


class TelemetryService:
    """Handle returned by :func:`device_agent.mqtt.start`; call :meth:`stop` on shutdown."""

    def __init__(self, config: MqttConfig, agent: control.AgentLike,
                 updater: control.UpdaterLike | None, *, trust: OperatorTrust, capture_store: Any = None) -> None:
        if not config.queue_dir:
            raise ValueError("MqttConfig.queue_dir is required (see MqttConfig.with_state_dir)")
        self.config = config
        self.agent = agent
        self.updater = updater
        qdir = QueueDir(Path(config.queue_dir))
        self.queue = DurableQueue(qdir.queue, budgets=Budgets(
            events_bytes=config.budget_events_bytes, deploy_bytes=config.budget_deploy_bytes,
            metrics_bytes=config.budget_metrics_bytes, total_bytes=config.budget_total_bytes))
        self.store = ControlStore(qdir.control_state)
        self.state: ControlState = self.store.load()
        self.gate = ControlGate(recipient=Recipient(config.fleet, config.device_id, config.groups), trust=trust,
                                replay=ReplayStore(qdir.control_replay), max_bytes=config.max_control_payload_bytes)
        self.refusals = RefusalLimiter(per_min=config.refusal_events_per_min)
        if not trust.keys().keys:
            log.warning("no operator key in %s: every desired state and command will be refused (provision "
                        "the device with a root.json from `edgeship keys init`)", [str(p) for p in trust.roots])
        self.window = RequestWindow(clock=time.monotonic)  # the agent's window definition, its own windows
        self.sampler = ProcessSampler()
        self.link = MqttLink(config=config, queue=self.queue, on_connected=self._on_connected,
                             on_message=self._on_message, will_body=self._will_body)
        self.topics = self.link.topics
        from ..capture.pull import PullServer  # capture pull rounds (capture_store None: refused, capture off)

        self.capture_pull = PullServer(capture_store, fleet=config.fleet, device=config.device_id,
                                       publish=lambda pid, body: self.link.publish_direct(
                                           self.topics.of(Kind.CAPTURE_DATA, id=pid), Kind.CAPTURE_DATA, body))
        from .profile_cmd import ProfileRunner

        self.profiles = ProfileRunner(agent, updater, lambda kind, body, pid: self._enqueue(
            MessageClass.DEPLOY, self.topics.of(kind, id=pid), kind, body))
        self._lock = threading.Lock()          # guards state, pending, busy
        self._pending: Desired | None = None
        self._rerun = False                    # the pending document runs again (a signed retry)
        self._running: Desired | None = None
        self._last_event_state: str | None = None  # deploy worker thread only
        self._work = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ticker, name="edgeship-mqtt-metrics", daemon=True),
                         threading.Thread(target=self._deploy_worker, name="edgeship-mqtt-deploy", daemon=True)]

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "TelemetryService":
        self.agent.add_request_observer(self.window.observe)
        self.link.start()
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        """Publish offline status, flush what can be acknowledged in time, disconnect."""
        self._stop.set()
        self._work.set()
        self.link.stop(offline_body=payloads.status_offline(
            conn=self.link.connection_number, groups=self.config.groups, reason="shutdown"), timeout_s=timeout_s)
        for t in self._threads:
            t.join(timeout=2)
        self.queue.close()

    # ------------------------------------------------------------ outbound
    def _will_body(self, conn: int) -> dict:
        return payloads.status_offline(conn=conn, groups=self.config.groups, reason="connection lost")

    @property
    def max_payload_bytes(self) -> int:
        return self.config.max_control_payload_bytes

    def running_deployment(self) -> Desired | None:
        """The deployment being run now, if any."""
        with self._lock:
            return self._running

    def agent_status(self) -> dict:
        try:
            return dict(self.agent.status())
        except Exception as e:  # status must not take the control plane down
            log.exception("agent.status() failed")
            return {"ready": False, "error": str(e)}

    def publish_birth(self, conn: int) -> None:
        body = payloads.status_online(agent_status=self.agent_status(), groups=self.config.groups, conn=conn)
        self.link.publish_direct(self.topics.status, Kind.STATUS, body)

    def republish(self) -> None:
        """Birth and reported state again (after a rollback, or when asked by ``rebirth``)."""
        self.publish_birth(self.link.connection_number)
        self.publish_reported()

    def publish_response(self, topic: str, body: dict, properties: Any) -> None:
        """A command response, published now (not queued: the asker is waiting)."""
        self.link.publish_direct(topic, Kind.CMD_RESPONSE, body, properties=properties)

    def publish_reported(self) -> None:
        with self._lock:
            st = self.state
        body = payloads.reported(applied_version=st.applied_version, desired=st.desired,
                                 agent_status=self.agent_status(), rejected=list(st.rejected),
                                 last_deployment=st.last_deployment, penalty_box=self._penalties())
        self.link.publish_direct(self.topics.reported, Kind.REPORTED, body)

    def _penalties(self) -> list[dict]:
        releases = getattr(self.updater, "releases", None)
        try:
            return releases.penalties() if releases is not None else []
        except Exception:  # the reported state must go out even if the file is unreadable
            log.exception("reading the penalty box failed")
            return []

    def emit_event(self, *, category: str, severity: Severity, reason_code: str, detail: str,
                   context: dict | None = None) -> None:
        body = payloads.event(category=category, severity=severity, reason_code=reason_code,
                              detail=detail, context=context)
        self._enqueue(MessageClass.EVENTS, self.topics.events, Kind.EVENT, body)

    def _enqueue(self, cls: MessageClass, topic: str, kind: Kind, body: dict) -> None:
        try:
            self.link.enqueue(cls, topic, kind, body)
        except QueueError:
            log.exception("telemetry queue write failed; message lost: %s", topic)

    def _on_connected(self, conn: int) -> None:
        self.publish_birth(conn)
        self.publish_reported()

    def publish_metrics(self) -> None:
        w = self.window.roll()
        qs = self.queue.stats()
        body = payloads.metrics(
            window_s=w.window_s, requests=w.requests, errors=w.errors,
            latency_ms={"p50": w.latency_ms_p50, "p95": w.latency_ms_p95, "p99": w.latency_ms_p99},
            system=self.sampler.sample(), active_model=self.agent_status().get("active") or None,
            queue={"depth": qs.depth, "bytes": qs.bytes, "dropped": qs.dropped,
                   "inflight": self.link.inflight_count(), "broker_rejected": self.link.counters.broker_rejected})
        self._enqueue(MessageClass.METRICS, self.topics.metrics, Kind.METRICS, body)

    def _ticker(self) -> None:
        next_metrics = time.monotonic() + self.config.metrics_interval_s
        next_beat = time.monotonic() + self.config.heartbeat_s
        while not self._stop.wait(0.2):
            now = time.monotonic()
            if now >= next_metrics:
                next_metrics = now + self.config.metrics_interval_s
                self.publish_metrics()
            if now >= next_beat:
                next_beat = now + self.config.heartbeat_s
                if self.link.connected:
                    self.publish_reported()

    # ------------------------------------------------------------ inbound
    def _on_message(self, message: Any) -> None:
        topic = message.topic
        if not topic.startswith(self.topics.base + "/"):
            return
        leaf = topic[len(self.topics.base) + 1:]
        if leaf == self.topics.desired[len(self.topics.base) + 1:] and not message.payload:
            return  # an operator cleared the retained topic: nothing to do
        try:
            msg = self.gate.admit(leaf, bytes(message.payload))
        except ControlMessageRefused as e:
            emitted = self.reject(leaf, e.error, {"bytes": len(message.payload), "topic": leaf})
            if e.spec.kind is Kind.CAPTURE_PULL:
                if emitted:
                    self.capture_pull.refuse(_pull_id_of(message.payload), e.error.reason_code, e.error.detail)
            elif e.spec.kind is not Kind.DESIRED and emitted:
                answer_refused(self, _command_name(leaf, e.levels), e.error, message.properties)
            return
        if msg is None:
            return
        if msg.spec.kind is Kind.DESIRED:
            self._on_desired(msg.body)
        elif msg.spec.kind is Kind.CAPTURE_PULL:
            if msg.fresh:  # one round per signed request
                self.capture_pull.handle(msg.body)
        elif msg.fresh:  # a command redelivered (same signed message) runs once
            run_command(self, _command_name(leaf, msg.levels), msg.body, message.properties)
        else:
            log.info("command %s version %d already run, ignored", leaf, msg.verified.signed.version)

    def reject(self, what: str, e: PayloadRejected, context: dict | None = None) -> bool:
        """Log a refused inbound document and report it on ``events`` (rate limited: a flood
        is counted, ``context.suppressed``, not queued). Returns whether it was reported."""
        emit, held = self.refusals.allow()
        if not emit:
            log.debug("%s rejected (not reported: rate limit): %s", what, e)
            return False
        log.warning("%s rejected: %s", what, e)
        self.emit_event(category="control", severity=Severity.WARNING if e.reason_code.startswith("payload.")
                        else Severity.ALARM, reason_code=e.reason_code,
                        detail=f"{what} rejected: {e.detail}", context={**(context or {}), "suppressed": held})
        return True

    def _on_desired(self, body: dict) -> None:
        """Validate an admitted desired document and queue it for the deployment worker."""
        try:
            desired = payloads.desired_from(body)
        except PayloadRejected as e:
            self.reject("desired state", e)
            return
        with self._lock:
            stale = desired.version <= self.state.applied_version or (
                self._pending is not None and desired.version <= self._pending.version) or (
                self._running is not None and desired.version <= self._running.version)
            if stale:
                log.info("desired version %d ignored (applied %d)", desired.version, self.state.applied_version)
                return
            self._pending = desired
            running = self._running
        if running is not None and self.updater is not None:
            self.updater.cancel()  # only effective before the switch; otherwise it finishes first
        self._work.set()

    def _deploy_worker(self) -> None:
        while not self._stop.is_set():
            self._work.wait(0.5)
            self._work.clear()
            with self._lock:
                desired, self._pending = self._pending, None
                rerun, self._rerun = self._rerun, False
                if desired is not None:
                    self._running = desired
            if desired is None:
                continue
            try:
                self._deploy(desired, rerun=rerun)
            finally:
                with self._lock:
                    self._running = None

    def _save(self, state: ControlState) -> None:
        with self._lock:
            self.state = state
        self.store.save(state)

    def rerun_desired(self, model: str, release: int) -> bool:
        """Run the current desired document again if it names ``model`` ``release`` (after a
        signed ``retry`` took that release out of the penalty box). False if it does not."""
        with self._lock:
            d = self.state.desired
            if not d or d.get("model") != model or d.get("release") != release or self._running is not None:
                return False
            self._pending, self._rerun = payloads.desired_from(d), True
        self._work.set()
        return True

    def _deploy(self, desired: Desired, *, rerun: bool = False) -> None:
        decision = control.decide(self.state, desired, self.agent_status().get("active"))
        if decision is Decision.IGNORE_STALE and not rerun:
            return
        self._save(control.accept(self.state, desired))
        if decision is Decision.ALREADY_ACTIVE:
            self._finish(desired, "commit", None, "release already active")
            return
        if self.updater is None:
            self._finish(desired, "failed", "update.unavailable", "this agent has no updater configured")
            return
        self._deploy_event(desired, "accepted", None, "deployment started", None)
        self.publish_reported()
        self._last_event_state = None
        try:
            result = self.updater.update(desired.model, release=desired.release,
                                         deployment_id=desired.deployment_id,
                                         on_event=lambda ev: self._on_update_event(desired, ev),
                                         authority=Authority.OPERATOR)  # signed: may return to a release it ran
            state = str(control.plain(control.field_of(result, "state", "failed")))
            code = control.reason_of(result)
            detail = str(control.field_of(result, "detail", "") or "")
        except Exception as e:  # the updater's typed errors end the deployment as failed
            log.exception("update of %s release %s failed", desired.model, desired.release)
            state, code, detail = "failed", control.reason_of(e) or f"error.{type(e).__name__}", str(e)
        self._finish(desired, state, code, detail)

    def _finish(self, desired: Desired, state: str, code: str | None, detail: str) -> None:
        """Record the outcome, make sure the deploy topic ends with it, publish reported."""
        if self._last_event_state != state:
            self._deploy_event(desired, state, code, detail, None)
            self._alarm_if_needed(desired, state, code, detail)
        self._last_event_state = None
        self._save(control.finish(self.state, desired, final_state=state, reason_code=code, detail=detail))
        self.publish_reported()

    def _deploy_event(self, desired: Desired, state: str, code: str | None, detail: str,
                      ts: float | None) -> None:
        body = payloads.deploy_event(deployment_id=desired.deployment_id, model=desired.model,
                                     release=desired.release, state=state, reason_code=code,
                                     detail=detail, event_ts=ts)
        self._enqueue(MessageClass.DEPLOY, self.topics.deploy(desired.deployment_id), Kind.DEPLOY, body)

    def _alarm_if_needed(self, desired: Desired, state: str, code: str | None, detail: str) -> None:
        category = control.event_category(state, code)
        if category is None:
            return
        severity = Severity.ALARM if category == "security" else Severity.WARNING
        self.emit_event(category=category, severity=severity, reason_code=code or state, detail=detail,
                        context={"deployment_id": desired.deployment_id, "model": desired.model,
                                 "release": desired.release, "state": state})

    def _on_update_event(self, desired: Desired, ev: Any) -> None:
        state = str(control.plain(control.field_of(ev, "state")))
        code = control.reason_of(ev)
        detail = str(control.field_of(ev, "detail", "") or "")
        self._last_event_state = state
        self._deploy_event(desired, state, code, detail, control.field_of(ev, "ts"))
        self._alarm_if_needed(desired, state, code, detail)


    # ------------------------------------------------------------ updates the device runs itself
    def report_update_event(self, ev: Any) -> None:
        """An event of an update polling started (``poll-…`` deployment): on ``deploy/{id}``,
        an alarm when it failed, and a failed release in ``rejected``."""
        state = str(control.plain(control.field_of(ev, "state")))
        dep, model, release = control.field_of(ev, "deployment_id"), control.field_of(ev, "model"), \
            control.field_of(ev, "release")
        code, detail = control.reason_of(ev), str(control.field_of(ev, "detail", "") or "")
        self._enqueue(MessageClass.DEPLOY, self.topics.deploy(dep), Kind.DEPLOY, payloads.deploy_event(
            deployment_id=dep, model=model, release=release, state=state, reason_code=code, detail=detail,
            event_ts=control.field_of(ev, "ts")))
        if state in control.REJECTING_STATES or state in ("commit", "aborted"):
            category = control.event_category(state, code)
            if category is not None:
                self.emit_event(category=category, severity=Severity.ALARM if category == "security"
                                else Severity.WARNING, reason_code=code or state, detail=detail,
                                context={"deployment_id": dep, "model": model, "release": release, "state": state})
            self._save(control.local_finish(self.state, deployment_id=dep, model=model, release=release,
                                            final_state=state, reason_code=code, detail=detail))
            self.publish_reported()

    def report_skip(self, model: str, penalty: Any) -> None:
        """Polling skipped a release in the penalty box (said once per release)."""
        self.emit_event(category="update", severity=Severity.INFO, reason_code="penalty.skipped",
                        detail=f"{model} release {penalty.release} skipped: it failed here before "
                               f"({penalty.reason}); only a new release or a signed retry reaches it",
                        context={"model": model, "release": penalty.release, "sha256": penalty.sha256,
                                 "reason": penalty.reason})
        self.publish_reported()


def _pull_id_of(raw: bytes) -> str:
    """The pull id a refused (unauthenticated) pull request names, only to answer on its topic."""
    import json

    try:
        doc = json.loads(raw)
        pid = doc.get("signed", {}).get("body", {}).get("pull_id") if isinstance(doc, dict) else None
    except (ValueError, AttributeError):
        pid = None
    return pid if isinstance(pid, str) else "unknown"


def _command_name(leaf: str, levels: dict) -> str:
    """``rollback`` of ``cmd/rollback``; a fixed operator row's last level otherwise."""
    return levels.get("name") or leaf.rsplit("/", 1)[-1]
