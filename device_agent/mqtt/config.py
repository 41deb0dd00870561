"""Typed, frozen configuration of the ``[mqtt]`` section of the agent config.

Registered in ``device_agent.config.SECTIONS`` as ``"mqtt":
"device_agent.mqtt.config:MqttConfig"``; every field carries its documentation (written
as a comment by ``edgeship-agent install``) and docs/mqtt.md lists them. Unknown keys and
wrong types are refused by the one loader, ``device_agent.configfile.load_table``, whether
the table comes from the agent's config file or :meth:`MqttConfig.from_mapping`. Empty
strings mean "not set" (TOML has no null).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from runtime.contracts.mqtt.topics import DEFAULT_PREFIX, check_level
from runtime.contracts.statedir import StateDir

from ..configfile import doc, load_table
from .errors import TelemetryConfigError

_MIB = 1 << 20


def check_secret_file(path: str | os.PathLike, what: str) -> None:
    """Refuse a private key or password file that others than its owner may read.

    Raises:
        TelemetryConfigError: naming the file and its mode (and the chmod that fixes it).
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise TelemetryConfigError(f"{what} {path}: {e.strerror or e}") from e
    if mode & 0o077:
        raise TelemetryConfigError(f"{what} {path} has mode {mode:04o}: a secret must be readable by its owner "
                                   f"only (chmod 600 {path})")


@dataclass(frozen=True)
class MqttConfig:
    """Settings of the agent's MQTT link, durable queue and control plane."""

    fleet: str = doc("Fleet name: the second topic level, edgeship/v1/<fleet>/<device>/...", "default")
    device_id: str = doc("This device's id in topics and the MQTT client id "
                         "(edgeship-<fleet>-<device_id>); defaults to the host name.",
                         default_factory=socket.gethostname)
    host: str = doc("MQTT 5 broker host name or address.", "127.0.0.1")
    port: int = doc("Broker TCP port (1883 plain, 8883 TLS by convention).", 1883)
    groups: tuple[str, ...] = doc("Groups this device belongs to; reported in its birth status so "
                                  "`edgeship push --group` can target it.", ())
    topic_prefix: str = doc("First topic levels; change only with the broker ACL.", DEFAULT_PREFIX)
    keepalive_s: int = doc("MQTT keep-alive in seconds; the broker declares the device dead "
                           "(Last Will) after 1.5x this without traffic.", 30)
    tls: bool = doc("Connect with TLS (verify the broker against ca_file or the system CAs).", False)
    ca_file: str = doc("PEM file of the CA that signed the broker certificate.", "")
    cert_file: str = doc("Client certificate (PEM) for mutual TLS; needs key_file.", "")
    key_file: str = doc("Private key (PEM) of cert_file.", "")
    username: str = doc("MQTT username (with password_file) when not using client certificates.", "")
    password_file: str = doc("File holding the MQTT password (keep it 0600).", "")
    will_delay_s: int = doc("MQTT 5 Will Delay: seconds the broker waits before publishing the "
                            "offline status; only effective with session_expiry_s >= it.", 0)
    session_expiry_s: int = doc("MQTT 5 session expiry in seconds; 0 = clean sessions (the "
                                "durable queue and retained desired state do not need sessions).", 0)
    reconnect_min_s: int = doc("First reconnect delay in seconds (doubles up to reconnect_max_s).", 1)
    reconnect_max_s: int = doc("Longest reconnect delay in seconds.", 60)
    max_inflight: int = doc("QoS 1 messages sent and not yet acknowledged, at most.", 100)
    replay_max_per_s: float = doc("Rate limit for replaying messages queued before the current "
                                  "connection (flagged hist=true), messages per second.", 500.0)
    metrics_interval_s: float = doc("Window of telemetry/metrics, seconds.", 10.0)
    heartbeat_s: float = doc("Republish the retained reported state this often (last seen), seconds.", 60.0)
    queue_dir: str = doc("Directory of the durable queue and control state; empty = "
                         "<state_dir>/telemetry.", "")
    budget_events_bytes: int = doc("Disk budget of queued events (alarms); oldest dropped first.", 8 * _MIB)
    budget_deploy_bytes: int = doc("Disk budget of queued deployment progress events.", 4 * _MIB)
    budget_metrics_bytes: int = doc("Disk budget of queued metrics windows.", 16 * _MIB)
    budget_total_bytes: int = doc("Disk budget of the whole queue; over it metrics go first, "
                                  "then deploy events, then events.", 24 * _MIB)
    max_control_payload_bytes: int = doc("Largest desired-state or command payload accepted; "
                                         "larger ones are refused and reported.", 16384)
    operator_root: str = doc("TUF root.json whose operator keys (x-edgeship-operator, from `edgeship keys "
                             "init`) sign desired state and commands; empty = the newest of the state "
                             "dir's update/metadata/root.json and trust/root.json. Unsigned, forged, "
                             "replayed, expired or misaddressed messages are refused.", "")
    refusal_events_per_min: float = doc("Refused control messages reported on events, per minute after a "
                                        "burst of 10; the rest are counted (context.suppressed).", 10.0)

    def __post_init__(self) -> None:
        try:
            check_level("fleet", self.fleet)
            check_level("device_id", self.device_id)
            for g in self.groups:
                check_level("group", g)
        except ValueError as e:
            raise TelemetryConfigError(f"[mqtt] {e}") from e
        positive = ("port", "keepalive_s", "max_inflight", "max_control_payload_bytes",
                    "budget_events_bytes", "budget_deploy_bytes", "budget_metrics_bytes",
                    "budget_total_bytes", "reconnect_min_s", "reconnect_max_s",
                    "replay_max_per_s", "metrics_interval_s", "heartbeat_s", "refusal_events_per_min")
        for name in positive:
            if getattr(self, name) <= 0:
                raise TelemetryConfigError(f"[mqtt] {name} must be > 0, got {getattr(self, name)}")
        if self.will_delay_s < 0 or self.session_expiry_s < 0:
            raise TelemetryConfigError("[mqtt] will_delay_s and session_expiry_s must be >= 0")
        if bool(self.cert_file) != bool(self.key_file):
            raise TelemetryConfigError("[mqtt] cert_file and key_file must be given together")
        if (self.cert_file or self.ca_file) and not self.tls:
            raise TelemetryConfigError("[mqtt] ca_file/cert_file need tls = true")

    def with_state_dir(self, state_dir: str | Path) -> "MqttConfig":
        """This config with ``queue_dir`` defaulted to ``<state_dir>/telemetry``."""
        if self.queue_dir:
            return self
        return dataclasses.replace(self, queue_dir=str(StateDir(Path(state_dir)).telemetry))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, state_dir: str | Path | None = None) -> "MqttConfig":
        """Build from a parsed TOML table (the same loader as the agent's config file).

        Raises:
            TelemetryConfigError: an unknown key, a wrong type or value (naming it).
        """
        cfg = load_table(cls, dict(data), "[mqtt]", error=TelemetryConfigError)
        return cfg.with_state_dir(state_dir) if state_dir is not None else cfg
