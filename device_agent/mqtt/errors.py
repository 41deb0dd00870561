"""One error hierarchy for the MQTT telemetry and control plane of the agent."""

from __future__ import annotations

from ..configfile import ConfigError
from ..errors import DeviceAgentError


class TelemetryError(DeviceAgentError):
    """Base class of every telemetry/control error."""


class TelemetryConfigError(TelemetryError, ConfigError):
    """The [mqtt] section of the agent config is invalid (unknown key, wrong type, bad value).

    Also a ``device_agent.config.ConfigError``, so the agent CLI reports it like any config error."""


class QueueError(TelemetryError):
    """The durable on-disk queue cannot be opened or written (path, disk, corruption)."""
