"""Imperative commands on ``cmd/{name}``: ``rollback``, ``rebirth``, ``cancel``, ``profile``
(:mod:`.profile_cmd`).

A command may carry an MQTT 5 Response Topic and Correlation Data; the response goes to that
topic only if it is ``cmd/{name}/resp[/...]`` of this device (where the broker ACL lets the
device publish), otherwise to ``cmd/{name}/resp`` with the Correlation Data copied. Senders set a
Message Expiry Interval so the broker drops stale commands. Bad commands are answered with
``ok: false`` and reported on ``events``; they never affect serving.

The handlers see the service only through :class:`CommandHost` (its public methods).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.payloads import Desired
from runtime.contracts.mqtt.topics import DeviceTopics

log = logging.getLogger("edgeship.telemetry")

Result = tuple[bool, "str | None", str, dict]


class CommandHost(Protocol):
    """What the command handlers need from the service that received the command
    (:class:`~.service.TelemetryService` implements it)."""

    agent: Any
    updater: Any
    topics: DeviceTopics
    max_payload_bytes: int

    def running_deployment(self) -> Desired | None: ...
    def agent_status(self) -> dict: ...
    def republish(self) -> None: ...
    def emit_event(self, *, category: str, severity: payloads.Severity, reason_code: str, detail: str,
                   context: dict | None = None) -> None: ...
    def reject(self, what: str, e: PayloadRejected, context: dict | None = None) -> None: ...
    def publish_response(self, topic: str, body: dict, properties: Any) -> None: ...
    profiles: Any  # the ProfileRunner of ``profile``


def _rollback(host: CommandHost, body: dict) -> Result:
    running = host.running_deployment()
    if running is not None:
        return False, "busy.deploying", f"deployment {running.deployment_id} is in progress; cancel it first", {}
    try:
        host.agent.rollback()
    except Exception as e:  # e.g. no previous model: answered, not raised
        return False, getattr(e, "reason_code", None) or f"rollback.{type(e).__name__}", str(e), {}
    status = host.agent_status()
    host.republish()
    return True, None, "rolled back to the previous model", {"active": status.get("active"),
                                                              "previous": status.get("previous")}


def _rebirth(host: CommandHost, body: dict) -> Result:
    host.republish()
    return True, None, "birth and reported state republished", {}


def _cancel(host: CommandHost, body: dict) -> Result:
    running = host.running_deployment()
    if running is None or host.updater is None:
        return False, "cancel.nothing_running", "no deployment is in progress", {}
    want = body.get("deployment_id")
    if want is not None and want != running.deployment_id:
        return False, "cancel.other_deployment", f"running deployment is {running.deployment_id}, not {want}", {}
    outcome = host.updater.cancel()
    return True, None, "cancel requested (effective before the switch)", {
        "deployment_id": running.deployment_id, "cancel_result": outcome if isinstance(outcome, (bool, str)) else None}


def _profile(host: CommandHost, body: dict) -> Result:
    return host.profiles.handle(host, body)


HANDLERS: dict[str, Callable[[CommandHost, dict], Result]] = {
    "rollback": _rollback, "rebirth": _rebirth, "cancel": _cancel, "profile": _profile,
}


def _response_target(host: CommandHost, name: str, properties: Any) -> tuple[str, Any]:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
    corr = getattr(properties, "CorrelationData", None) if properties is not None else None
    if topic is None or not host.topics.is_response_topic(topic):
        if topic is not None:
            host.emit_event(category="control", severity=payloads.Severity.WARNING,
                           reason_code="cmd.response_topic_refused",
                           detail=f"response topic {topic!r} is outside this device's subtree; "
                                  f"answered on {host.topics.cmd_response(name)}")
        topic = host.topics.cmd_response(name)
    props = Properties(PacketTypes.PUBLISH)
    if corr is not None:
        props.CorrelationData = corr
    props.MessageExpiryInterval = 300
    return topic, props


def run_command(host: CommandHost, name: str, raw: bytes, properties: Any) -> None:
    """Execute one command and publish its response (never raises)."""
    if name not in HANDLERS:
        ok, code, detail, result = False, "cmd.unknown", f"unknown command {name!r}; known: {sorted(HANDLERS)}", {}
        host.emit_event(category="control", severity=payloads.Severity.WARNING, reason_code=code, detail=detail)
    else:
        try:
            body = payloads.parse_command(raw, max_bytes=host.max_payload_bytes)
        except PayloadRejected as e:
            host.reject(f"command {name}", e, {"bytes": len(raw)})
            ok, code, detail, result = False, e.reason_code, e.detail, {}
        else:
            try:
                ok, code, detail, result = HANDLERS[name](host, body)
            except Exception as e:
                log.exception("command %s failed", name)
                ok, code, detail, result = False, f"cmd.error.{type(e).__name__}", str(e), {}
    topic, props = _response_target(host, name, properties)
    host.publish_response(topic, payloads.command_response(command=name, ok=ok, reason_code=code,
                                                           detail=detail, result=result), props)
