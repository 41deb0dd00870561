"""Pure planning and rendering for push and fleet status: values in, values out."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping

from runtime.contracts.mqtt.payloads import Desired

from ..console import format_table

from .client import DeviceView
from .errors import NoTargetsError

TERMINAL_OK = frozenset({"commit"})
TERMINAL_BAD = frozenset({"failed", "rolled_back", "aborted"})


def new_deployment_id(now: float | None = None) -> str:
    t = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"dep-{t}-{secrets.token_hex(3)}"


def select_devices(views: Mapping[str, DeviceView], *, device: str | None, group: str | None) -> list[str]:
    """The targeted devices: one named device, or every device whose birth lists ``group``.

    Raises:
        NoTargetsError: the group has no member in the retained status topics.
    """
    if device is not None:
        return [device]
    members = sorted(d for d, v in views.items()
                     if v.status and group in (v.status.get("groups") or []))
    if not members:
        known = sorted({g for v in views.values() if v.status for g in v.status.get("groups") or []})
        raise NoTargetsError(f"no device of the fleet reports group {group!r} in its status "
                             f"(groups seen: {known or 'none'}); set [mqtt] groups on the devices")
    return members


def offline_devices(views: Mapping[str, DeviceView], devices: list[str]) -> list[str]:
    """The targeted devices whose retained status says offline (not those never seen)."""
    return [d for d in devices if d in views and views[d].status and not views[d].status.get("online")]


def next_version(view: DeviceView | None) -> int:
    """One above every version the device's desired and reported documents mention."""
    seen = 0
    if view is not None:
        if view.desired and isinstance(view.desired.get("version"), int):
            seen = max(seen, view.desired["version"])
        if view.reported and isinstance(view.reported.get("applied_version"), int):
            seen = max(seen, view.reported["applied_version"])
    return seen + 1


def desired_for(view: DeviceView | None, *, deployment_id: str, model: str, release: int,
                issued_by: str) -> Desired:
    return Desired(version=next_version(view), deployment_id=deployment_id, model=model,
                   release=release, issued_at_ms=int(time.time() * 1000), issued_by=issued_by)


@dataclass
class WaitState:
    """Terminal outcome per device of one deployment (fed with deploy events)."""

    deployment_id: str
    devices: tuple[str, ...]
    outcome: dict[str, dict]

    @classmethod
    def start(cls, deployment_id: str, devices: list[str]) -> "WaitState":
        return cls(deployment_id, tuple(devices), {})

    def feed(self, device: str, leaf: str, doc: Mapping[str, Any]) -> bool:
        """Record a device document; True when it settles a targeted device.

        The outcome is taken from the device's retained ``reported`` state (its own word, and
        republished on every reconnect), not from the progress events, which are only shown."""
        if device not in self.devices or leaf != "reported":
            return False
        last = doc.get("last_deployment") or {}
        if last.get("deployment_id") != self.deployment_id:
            return False
        if last.get("state") in TERMINAL_OK | TERMINAL_BAD:
            self.outcome[device] = dict(last)
            return True
        return False

    @property
    def done(self) -> bool:
        return set(self.outcome) >= set(self.devices)

    @property
    def succeeded(self) -> bool:
        return self.done and all(o.get("state") in TERMINAL_OK for o in self.outcome.values())

    def failures(self) -> list[str]:
        lines = []
        for d in self.devices:
            o = self.outcome.get(d)
            if o is None:
                lines.append(f"{d}: no final result (still running or offline)")
            elif o.get("state") not in TERMINAL_OK:
                lines.append(f"{d}: {o.get('state')} {o.get('reason_code') or ''} {o.get('detail') or ''}".rstrip())
        return lines


def _model_str(m: Mapping[str, Any] | None) -> str:
    if not m:
        return "-"
    v = f" ({m['version']})" if m.get("version") else ""
    return f"{m.get('name', '?')} r{m.get('release', '?')}{v}"


def _ago(ts_ms: int | None, now_ms: int) -> str:
    if not ts_ms:
        return "-"
    s = max(0, (now_ms - ts_ms) // 1000)
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def status_rows(views: Mapping[str, DeviceView], *, now_ms: int | None = None) -> list[dict[str, Any]]:
    """One JSON-able row per device from its retained status/reported/desired documents."""
    rows = []
    for device in sorted(views):
        v = views[device]
        st, rep = v.status or {}, v.reported or {}
        last = rep.get("last_deployment") or {}
        seen = max([t for t in (st.get("ts_ms") if st.get("online") else None, rep.get("ts_ms")) if t] or [0]) or None
        rows.append({
            "device": device, "online": bool(st.get("online")), "groups": st.get("groups") or [],
            "active": rep.get("active", st.get("active")), "previous": rep.get("previous", st.get("previous")),
            "applied_version": rep.get("applied_version"),
            "desired": {k: (v.desired or {}).get(k) for k in ("version", "deployment_id", "model", "release")} if v.desired else None,
            "last_deployment": {k: last.get(k) for k in ("deployment_id", "model", "release", "state", "reason_code", "detail")} if last else None,
            "rejected": rep.get("rejected") or [], "last_seen_ms": seen, "agent_version": st.get("agent_version"),
        })
    return rows


def render_table(rows: list[dict[str, Any]], *, now_ms: int | None = None) -> str:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    header = ("DEVICE", "ONLINE", "ACTIVE MODEL", "PREVIOUS", "LAST DEPLOYMENT", "LAST SEEN")
    table = []
    for r in rows:
        last = r["last_deployment"]
        dep = "-" if not last else f"{last['deployment_id']} {last['model']} r{last['release']}: {last['state']}" + (
            f" ({last['reason_code']})" if last.get("reason_code") else "")
        table.append((r["device"], "yes" if r["online"] else "NO", _model_str(r["active"]),
                      _model_str(r["previous"]), dep, _ago(r["last_seen_ms"], now_ms)))
    return format_table(header, table)
