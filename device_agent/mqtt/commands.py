"""Imperative commands on ``cmd/{name}``: ``rollback``, ``rebirth``, ``cancel``.

A command may carry an MQTT 5 Response Topic and Correlation Data; the response goes to that
topic only if it is ``cmd/{name}/resp[/...]`` of this device (where the broker ACL lets the
device publish), otherwise to ``cmd/{name}/resp`` with the Correlation Data copied. Senders set a
Message Expiry Interval so the broker drops stale commands. Bad commands are answered with
``ok: false`` and reported on ``events``; they never affect serving.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import Kind

if TYPE_CHECKING:
    from .service import TelemetryService

log = logging.getLogger("edgeship.telemetry")

Result = tuple[bool, "str | None", str, dict]


def _rollback(svc: "TelemetryService", body: dict) -> Result:
    if svc._running is not None:
        return False, "busy.deploying", f"deployment {svc._running.deployment_id} is in progress; cancel it first", {}
    try:
        svc.agent.rollback()
    except Exception as e:  # e.g. no previous model: answered, not raised
        return False, getattr(e, "reason_code", None) or f"rollback.{type(e).__name__}", str(e), {}
    status = svc._agent_status()
    svc.publish_birth(svc.link._conn)
    svc.publish_reported()
    return True, None, "rolled back to the previous model", {"active": status.get("active"),
                                                              "previous": status.get("previous")}


def _rebirth(svc: "TelemetryService", body: dict) -> Result:
    svc.publish_birth(svc.link._conn)
    svc.publish_reported()
    return True, None, "birth and reported state republished", {}


def _cancel(svc: "TelemetryService", body: dict) -> Result:
    running = svc._running
    if running is None or svc.updater is None:
        return False, "cancel.nothing_running", "no deployment is in progress", {}
    want = body.get("deployment_id")
    if want is not None and want != running.deployment_id:
        return False, "cancel.other_deployment", f"running deployment is {running.deployment_id}, not {want}", {}
    outcome = svc.updater.cancel()
    return True, None, "cancel requested (effective before the switch)", {
        "deployment_id": running.deployment_id, "cancel_result": outcome if isinstance(outcome, (bool, str)) else None}


HANDLERS: dict[str, Callable[["TelemetryService", dict], Result]] = {
    "rollback": _rollback, "rebirth": _rebirth, "cancel": _cancel,
}


def _response_target(svc: "TelemetryService", name: str, properties: Any) -> tuple[str, Any]:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
    corr = getattr(properties, "CorrelationData", None) if properties is not None else None
    if topic is None or not svc.topics.is_response_topic(topic):
        if topic is not None:
            svc.emit_event(category="control", severity=payloads.Severity.WARNING,
                           reason_code="cmd.response_topic_refused",
                           detail=f"response topic {topic!r} is outside this device's subtree; "
                                  f"answered on {svc.topics.cmd_response(name)}")
        topic = svc.topics.cmd_response(name)
    props = Properties(PacketTypes.PUBLISH)
    if corr is not None:
        props.CorrelationData = corr
    props.MessageExpiryInterval = 300
    return topic, props


def run_command(svc: "TelemetryService", name: str, raw: bytes, properties: Any) -> None:
    """Execute one command and publish its response (never raises)."""
    if name not in HANDLERS:
        ok, code, detail, result = False, "cmd.unknown", f"unknown command {name!r}; known: {sorted(HANDLERS)}", {}
        svc.emit_event(category="control", severity=payloads.Severity.WARNING, reason_code=code, detail=detail)
    else:
        try:
            body = payloads.parse_command(raw, max_bytes=svc.config.max_control_payload_bytes)
        except PayloadRejected as e:
            svc._reject(f"command {name}", e, {"bytes": len(raw)})
            ok, code, detail, result = False, e.reason_code, e.detail, {}
        else:
            try:
                ok, code, detail, result = HANDLERS[name](svc, body)
            except Exception as e:
                log.exception("command %s failed", name)
                ok, code, detail, result = False, f"cmd.error.{type(e).__name__}", str(e), {}
    topic, props = _response_target(svc, name, properties)
    svc.link.publish_direct(topic, Kind.CMD_RESPONSE,
                            payloads.command_response(command=name, ok=ok, reason_code=code,
                                                      detail=detail, result=result),
                            properties=props)
