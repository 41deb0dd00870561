"""One error hierarchy for the MQTT telemetry and control plane of the agent."""

from __future__ import annotations

from device_agent.config import ConfigError


class TelemetryError(Exception):
    """Base class of every telemetry/control error."""


class TelemetryConfigError(TelemetryError, ConfigError):
    """The [mqtt] section of the agent config is invalid (unknown key, wrong type, bad value).

    Also a ``device_agent.config.ConfigError``, so the agent CLI reports it like any config error."""


class QueueError(TelemetryError):
    """The durable on-disk queue cannot be opened or written (path, disk, corruption)."""


class PayloadRejected(TelemetryError):
    """An inbound desired-state document or command was refused.

    ``reason_code`` is a stable machine-readable code (``payload.too_large``,
    ``payload.not_json``, ``payload.schema``, ...) reported in the ``events`` topic.
    """

    def __init__(self, reason_code: str, detail: str) -> None:
        self.reason_code = reason_code
        self.detail = detail
        super().__init__(f"{reason_code}: {detail}")
