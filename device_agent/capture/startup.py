"""Starting capture in the agent process: the store, the recorder on the agent, and the links
to telemetry (clamp reports as events) and drift (alarms trigger drift captures).

Called by ``device_agent.serving.server`` when ``[capture] enabled``; embedders call
:func:`start_capture` with their Agent.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.contracts.statedir import StateDir

from ..logs import get_logger
from .recorder import CaptureRecorder
from .store import CaptureStore

log = get_logger("capture")


@dataclass
class CaptureHandle:
    recorder: CaptureRecorder
    store: CaptureStore
    agent: Any

    def stop(self) -> None:
        self.agent.set_capture(None)
        self.recorder.stop()


def _identity(config: Any) -> tuple[str, str]:
    mqtt = (getattr(config, "extensions", None) or {}).get("mqtt")
    if mqtt is not None:
        return mqtt.fleet, mqtt.device_id
    return "local", socket.gethostname()


def _lookup(agent: Any):
    def lookup(sha: str) -> tuple[dict, Any]:
        cur = agent.current()
        if cur is not None and cur.ref.sha256 == sha:
            return cur.ref.to_json(), cur.info
        return agent.store.ref(sha).to_json(), agent.store.info(sha)

    return lookup


def start_capture(config: Any, agent: Any) -> CaptureHandle | None:
    """Start capture for ``agent`` when ``[capture] enabled`` (else None).

    Raises:
        ConfigError: the redaction hook does not load (capture must not run unredacted).
        OSError: the capture directory cannot be made.
    """
    sec = config.section("capture")
    if not sec.enabled:
        return None
    root = Path(sec.dir) if sec.dir else StateDir(config.state_dir).capture
    redact = sec.redaction_hook()
    store = CaptureStore(root, disk_budget_bytes=sec.disk_budget_bytes, min_free_bytes=sec.min_free_bytes,
                         index_interval_s=sec.index_interval_s)
    fleet, device = _identity(config)
    rec = CaptureRecorder(sec, store, model_lookup=_lookup(agent), fleet=fleet, device=device, redact=redact).start()
    cur = agent.current()
    bundle_rules: list[str] = []
    if cur is not None:
        m = rec.rules_for(cur.ref.sha256)  # the served model's rules now: clamps are reported at start
        mine = {r.name for r in sec.rules}
        bundle_rules = [r.name for r in (*m.result, *m.error, *m.drift) if r.name not in mine]
    agent.set_capture(rec)
    log.info("capture.started", dir=str(root), rules=[r.name for r in sec.rules], bundle_rules=bundle_rules,
             captures=len(store.entries()), redact=sec.redact or None)
    return CaptureHandle(recorder=rec, store=store, agent=agent)


def attach_drift(handle: CaptureHandle, drift: Any) -> None:
    """Make every raised alarm of ``drift`` (a ``device_agent.monitoring.drift.DriftMonitor``)
    capture the recent calls that moved the score (the model's ``drift`` rules decide how many)."""
    def on_check(_report: Any, changes: list) -> None:
        for c in changes:
            sha = (c.model or {}).get("sha256")
            if sha and getattr(c.transition, "value", c.transition) == "raised":
                n = handle.recorder.on_drift_alarm(sha, c.name)
                log.info("capture.drift_alarm", tensor=c.name, reason=c.reason_code, queued=n)

    drift.add_listener(on_check)


def attach_telemetry(handle: CaptureHandle, svc: Any) -> None:
    """Report rule clamps and rules that cannot fire on the served model (now and later) as
    ``events`` (category ``capture``, reason ``capture.rule_clamped`` / ``capture.rule_invalid``)."""
    from runtime.contracts.mqtt.payloads import Severity

    def emit(reason: str, what: Any, context: dict) -> None:
        svc.emit_event(category="capture", severity=Severity.WARNING, reason_code=reason, detail=what.describe(),
                       context={"rule": what.rule, **context})

    def clamped(c) -> None:
        emit("capture.rule_clamped", c, {"asked_bytes": c.asked_bytes, "granted_bytes": c.granted_bytes})

    def invalid(i) -> None:
        emit("capture.rule_invalid", i, {"model": i.model, "outputs": list(i.outputs)})

    rec = handle.recorder
    for c in list(rec.clamps.values()):
        clamped(c)
    for i in list(rec.invalid.values()):
        invalid(i)
    rec.add_clamp_listener(clamped)
    rec.add_invalid_listener(invalid)
