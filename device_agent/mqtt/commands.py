"""Imperative commands on ``cmd/{name}``: ``rollback``, ``rebirth``, ``cancel``, ``retry``,
``profile`` (:mod:`.profile_cmd`).

A command reaches a handler only after :class:`~.inbound.ControlGate` admitted it (signed by
the operator for this device, unexpired, not replayed); the handler gets its signed body.

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
    def rerun_desired(self, model: str, release: int) -> bool: ...
    def agent_status(self) -> dict: ...
    def republish(self) -> None: ...
    def emit_event(self, *, category: str, severity: payloads.Severity, reason_code: str, detail: str,
                   context: dict | None = None) -> None: ...
    def reject(self, what: str, e: PayloadRejected, context: dict | None = None) -> bool: ...
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


def _retry(host: CommandHost, body: dict) -> Result:
    """Take a release out of the penalty box (``{"release": N, "model"?: name}``); if the
    current desired state names it, run that again."""
    release, model = body.get("release"), body.get("model") or (host.agent_status().get("active") or {}).get("name")
    if not isinstance(release, int) or isinstance(release, bool) or not isinstance(model, str):
        return False, "payload.schema", "retry needs {'release': int, 'model'?: str} (model: the active one)", {}
    releases = getattr(host.updater, "releases", None)
    if releases is None:
        return False, "update.unavailable", "this agent has no updater configured", {}
    forgiven = releases.forgive(model, release)
    if not forgiven:
        return False, "retry.not_boxed", f"{model} release {release} is not in this device's penalty box", {}
    rerun = host.rerun_desired(model, release)
    host.republish()
    return True, None, (f"{model} release {release} taken out of the penalty box"
                        + ("; the current desired state runs it again" if rerun else "")), {
        "forgiven": [p.sha256 for p in forgiven], "rerun": rerun}


def _profile(host: CommandHost, body: dict) -> Result:
    return host.profiles.handle(host, body)


HANDLERS: dict[str, Callable[[CommandHost, dict], Result]] = {
    "rollback": _rollback, "rebirth": _rebirth, "cancel": _cancel, "retry": _retry, "profile": _profile,
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


def run_command(host: CommandHost, name: str, body: dict, properties: Any) -> None:
    """Execute one admitted command and publish its response (never raises)."""
    if name not in HANDLERS:
        ok, code, detail, result = False, "cmd.unknown", f"unknown command {name!r}; known: {sorted(HANDLERS)}", {}
        host.emit_event(category="control", severity=payloads.Severity.WARNING, reason_code=code, detail=detail)
    else:
        try:
            ok, code, detail, result = HANDLERS[name](host, body)
        except Exception as e:
            log.exception("command %s failed", name)
            ok, code, detail, result = False, f"cmd.error.{type(e).__name__}", str(e), {}
    _answer(host, name, ok, code, detail, result, properties)


def answer_refused(host: CommandHost, name: str, e: PayloadRejected, properties: Any) -> None:
    """Answer a command the gate refused (``ok: false`` with the refusal's reason code)."""
    _answer(host, name, False, e.reason_code, e.detail, {}, properties)


def _answer(host: CommandHost, name: str, ok: bool, code: str | None, detail: str, result: dict,
            properties: Any) -> None:
    topic, props = _response_target(host, name, properties)
    host.publish_response(topic, payloads.command_response(command=name, ok=ok, reason_code=code,
                                                           detail=detail, result=result), props)
