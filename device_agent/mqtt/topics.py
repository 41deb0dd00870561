"""Topic names of the edgeship MQTT layout, as pure functions.

Everything a device publishes or receives lives under ``{prefix}/{fleet}/{device}/``
(prefix ``edgeship/v1``), so one broker ACL pattern confines a device to its subtree
(see docs/mqtt.md). Fleet and device names are single topic levels: no ``/``, ``+``,
``#`` or ``$`` and not empty, checked by :func:`check_level`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "edgeship/v1"
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: Commands the agent answers on ``cmd/{name}``.
COMMANDS = ("rollback", "rebirth", "cancel")


def check_level(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single topic level, else raise ValueError naming ``kind``."""
    if not isinstance(value, str) or not _LEVEL.match(value):
        raise ValueError(
            f"{kind} {value!r} is not a valid topic level: use 1-64 characters from "
            "[A-Za-z0-9._-], starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class DeviceTopics:
    """All topics of one device. Build with :func:`device_topics`."""

    base: str

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def reported(self) -> str:
        return f"{self.base}/reported"

    @property
    def desired(self) -> str:
        return f"{self.base}/desired"

    @property
    def cmd_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{check_level('command', name)}"

    def cmd_response(self, name: str) -> str:
        """Default response topic when a command carries no (acceptable) Response Topic."""
        return f"{self.base}/cmd/{check_level('command', name)}/resp"

    def deploy(self, deployment_id: str) -> str:
        return f"{self.base}/deploy/{check_level('deployment id', deployment_id)}"

    @property
    def metrics(self) -> str:
        return f"{self.base}/telemetry/metrics"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def is_response_topic(self, topic: str) -> bool:
        """True for ``{base}/cmd/{name}/resp[/...]`` without wildcards: where the broker ACL
        (docs/mosquitto/acl) lets the device publish command responses."""
        if not self.owns(topic):
            return False
        parts = topic[len(self.base) + 1:].split("/")
        return len(parts) >= 3 and parts[0] == "cmd" and parts[2] == "resp" and all(parts)

    def owns(self, topic: str) -> bool:
        """True when ``topic`` is inside this device's subtree (where its ACL lets it publish)."""
        return topic.startswith(self.base + "/") and not any(c in topic for c in "+#")


def device_topics(*, fleet: str, device: str, prefix: str = DEFAULT_PREFIX) -> DeviceTopics:
    """Topics of ``device`` in ``fleet``. Raises ValueError on an unsafe fleet/device name."""
    return DeviceTopics(f"{prefix}/{check_level('fleet', fleet)}/{check_level('device', device)}")


def fleet_filter(*, fleet: str, leaf: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for one leaf (``status``, ``reported``, ``deploy/+``...) of every device."""
    return f"{prefix}/{check_level('fleet', fleet)}/+/{leaf}"


def split_device_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str] | None:
    """``(fleet, device, leaf)`` for a topic under ``prefix``, or None if it is not one."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]
