"""Payload builders and parsers: pure functions from values to JSON-ready dicts and back.

Every outbound payload is a versioned JSON object (``schema`` = ``edgeship.<kind>/1``) with
the envelope fields ``device``, ``fleet``, ``boot_id``, ``msg_id`` (persistent, monotonic
across restarts), ``ts_ms`` (wall clock), ``mono_ms`` (CLOCK_MONOTONIC of ``boot_id``).
``seq`` (per-connection sequence number) and ``hist`` (replayed data) are stamped at send
time by :func:`stamp`, because only then is it known which connection carries the message.

Inbound documents (``desired``, ``cmd/*``) are parsed by :func:`parse_desired` and
:func:`parse_command`, which raise :class:`PayloadRejected` with a stable reason code.
Unknown fields in inbound documents are ignored (forward compatibility); missing or
mistyped required fields are refused.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import PayloadRejected
from .messages import Kind

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"


@dataclass(frozen=True)
class Origin:
    """Who and when: the envelope of one message (minus seq/hist, stamped at send)."""

    fleet: str
    device: str
    boot_id: str
    msg_id: int
    ts_ms: int
    mono_ms: int


def envelope(kind: Kind, origin: Origin, body: Mapping[str, Any]) -> dict[str, Any]:
    """A complete outbound document: the envelope fields first, then ``body``."""
    doc: dict[str, Any] = {
        "schema": kind.schema, "fleet": origin.fleet, "device": origin.device,
        "boot_id": origin.boot_id, "msg_id": origin.msg_id, "ts_ms": origin.ts_ms,
        "mono_ms": origin.mono_ms,
    }
    clash = set(doc) & set(body)
    if clash:
        raise ValueError(f"payload body may not override envelope fields {sorted(clash)}")
    doc.update(body)
    return doc


def encode(doc: Mapping[str, Any]) -> str:
    """Compact JSON of an unstamped document (always an object, so :func:`stamp` can append)."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=False)


def stamp(encoded: str, *, seq: int, hist: bool) -> bytes:
    """Append ``seq`` and ``hist`` to an encoded JSON object without re-parsing it."""
    if not encoded.endswith("}") or encoded == "{}":
        raise ValueError("stamp() needs a non-empty encoded JSON object")
    return f'{encoded[:-1]},"seq":{int(seq)},"hist":{"true" if hist else "false"}}}'.encode()


_ENVELOPE_FIELDS = frozenset(("schema", "fleet", "device", "boot_id", "msg_id", "ts_ms", "mono_ms"))


class EnvelopeEncoder:
    """``encode(envelope(kind, Origin(fleet, device, boot_id, msg_id, ts_ms, mono_ms), body))``
    for one sender, the same text in about half the time: the fields that never change
    (schema, fleet, device, boot_id) are encoded once per kind, only ids, times and the body
    per message. For integer ``msg_id``/``ts_ms``/``mono_ms``, as :class:`Origin` holds them."""

    def __init__(self, *, fleet: str, device: str, boot_id: str) -> None:
        self._fixed = {"fleet": fleet, "device": device, "boot_id": boot_id}
        self._heads: dict[Kind, str] = {}
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode  # what encode() uses

    def encode(self, kind: Kind, *, msg_id: int, ts_ms: int, mono_ms: int, body: Mapping[str, Any]) -> str:
        """Raises:
            ValueError: ``body`` overrides an envelope field (as :func:`envelope`).
        """
        head = self._heads.get(kind)
        if head is None:
            head = self._heads[kind] = encode({"schema": kind.schema, **self._fixed})[:-1]
        clash = _ENVELOPE_FIELDS.intersection(body)
        if clash:
            raise ValueError(f"payload body may not override envelope fields {sorted(clash)}")
        ids = f'{head},"msg_id":{int(msg_id)},"ts_ms":{int(ts_ms)},"mono_ms":{int(mono_ms)}'
        return f"{ids}}}" if not body else f"{ids},{self._dumps(body)[1:]}"


# ---------------------------------------------------------------- outbound bodies

def status_online(*, agent_status: Mapping[str, Any], groups: tuple[str, ...], conn: int) -> dict:
    """Birth: published retained on ``status`` at every connect."""
    return {
        "online": True, "conn": conn, "groups": list(groups),
        "agent_version": agent_status.get("agent_version"),
        "engines": agent_status.get("engines", []), "arch": agent_status.get("arch"),
        "active": agent_status.get("active"), "previous": agent_status.get("previous"),
        "ready": bool(agent_status.get("ready", False)),
    }


def status_offline(*, conn: int, groups: tuple[str, ...], reason: str) -> dict:
    """Last Will (retained, same topic as the birth) and the clean-shutdown death."""
    return {"online": False, "conn": conn, "groups": list(groups), "reason": reason}


def reported(*, applied_version: int, desired: Mapping[str, Any] | None,
             agent_status: Mapping[str, Any], rejected: list[Mapping[str, Any]],
             last_deployment: Mapping[str, Any] | None,
             penalty_box: list[Mapping[str, Any]] | None = None) -> dict:
    """The state the device really has; the device's own word, incl. self-decided rollbacks
    and the releases in its penalty box (``model, release, sha256, reason, failed_utc, skips``)."""
    return {
        "applied_version": applied_version,
        "desired": dict(desired) if desired else None,
        "active": agent_status.get("active"), "previous": agent_status.get("previous"),
        "rejected": [dict(r) for r in rejected],
        "last_deployment": dict(last_deployment) if last_deployment else None,
        "penalty_box": [dict(p) for p in penalty_box or ()],
    }


def metrics(*, window_s: float, requests: int, errors: int, latency_ms: Mapping[str, float | None],
            system: Mapping[str, Any], active_model: Mapping[str, Any] | None,
            queue: Mapping[str, Any]) -> dict:
    """One ``telemetry/metrics`` window: requests that reached the model and how many failed,
    latency percentiles of the successful ones (``p50``/``p95``/``p99``, ms), throughput, the
    system readings (``cpu_percent``, ``rss_bytes``, ``temperature_c``), the active model and
    the durable queue's state."""
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {"window_s": round(window_s, 3), "requests": requests, "errors": errors,
            "latency_ms": {k: ms(latency_ms.get(k)) for k in ("p50", "p95", "p99")},
            "throughput_rps": round(requests / window_s, 3) if window_s > 0 else 0.0,
            **system, "active_model": active_model, "queue": dict(queue)}


def deploy_event(*, deployment_id: str, model: str, release: int | None, state: str,
                 reason_code: str | None, detail: str, event_ts: float | None) -> dict:
    return {"deployment_id": deployment_id, "model": model, "release": release, "state": state,
            "reason_code": reason_code, "detail": detail, "event_ts": event_ts}


def event(*, category: str, severity: Severity, reason_code: str, detail: str,
          context: Mapping[str, Any] | None = None) -> dict:
    """A discrete event: security alarm, gate/trial failure, rejected control message."""
    return {"category": category, "severity": severity.value, "reason_code": reason_code,
            "detail": detail, "context": dict(context or {})}


def command_response(*, command: str, ok: bool, reason_code: str | None, detail: str,
                     result: Mapping[str, Any] | None = None) -> dict:
    return {"command": command, "ok": ok, "reason_code": reason_code, "detail": detail,
            "result": dict(result or {})}


# ---------------------------------------------------------------- inbound documents

@dataclass(frozen=True)
class Desired:
    """A versioned goal state written by the operator on the retained ``desired`` topic."""

    version: int
    deployment_id: str
    model: str
    release: int
    issued_at_ms: int | None = None
    issued_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": Kind.DESIRED.schema, "version": self.version,
                "deployment_id": self.deployment_id, "model": self.model, "release": self.release,
                "issued_at_ms": self.issued_at_ms, "issued_by": self.issued_by}


def load_object(raw: bytes, *, max_bytes: int, what: str) -> dict[str, Any]:
    """Parse an inbound payload: at most ``max_bytes``, UTF-8 JSON, an object.

    Raises:
        PayloadRejected: ``payload.too_large``, ``payload.not_json``, ``payload.schema``.
    """
    if len(raw) > max_bytes:
        raise PayloadRejected("payload.too_large", f"{what} is {len(raw)} bytes, limit {max_bytes}")
    try:
        doc = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise PayloadRejected("payload.not_json", f"{what} is not UTF-8 JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PayloadRejected("payload.schema", f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _need(doc: Mapping[str, Any], key: str, typ: type, what: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise PayloadRejected("payload.schema", f"{what}: '{key}' must be {typ.__name__}, got {value!r}")
    return value


def parse_desired(raw: bytes, *, max_bytes: int) -> Desired:
    """Parse and validate a desired-state document.

    Raises:
        PayloadRejected: too large, not JSON, wrong schema, bad or missing fields.
    """
    return desired_from(load_object(raw, max_bytes=max_bytes, what="desired state"))


def desired_from(doc: Mapping[str, Any]) -> Desired:
    """A desired-state document from its parsed JSON (the body of a signed message).

    Raises:
        PayloadRejected: wrong schema, bad or missing fields.
    """
    schema = doc.get("schema")
    if schema != Kind.DESIRED.schema:
        raise PayloadRejected("payload.schema", f"desired state: schema {schema!r} is not {Kind.DESIRED.schema!r}")
    version = _need(doc, "version", int, "desired state")
    release = _need(doc, "release", int, "desired state")
    dep = _need(doc, "deployment_id", str, "desired state")
    model = _need(doc, "model", str, "desired state")
    if version < 1 or release < 1:
        raise PayloadRejected("payload.schema", f"desired state: version {version} and release {release} must be >= 1")
    for key, value in (("deployment_id", dep), ("model", model)):
        if not _ID.match(value):
            raise PayloadRejected("payload.schema", f"desired state: {key} {value!r} must match {_ID.pattern}")
    issued = doc.get("issued_at_ms")
    by = doc.get("issued_by")
    return Desired(version=version, deployment_id=dep, model=model, release=release,
                   issued_at_ms=issued if isinstance(issued, int) else None,
                   issued_by=by if isinstance(by, str) else None)


def parse_command(raw: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Parse a command body (a JSON object, possibly empty).

    Raises:
        PayloadRejected: too large, not JSON, not an object.
    """
    return load_object(raw, max_bytes=max_bytes, what="command")
