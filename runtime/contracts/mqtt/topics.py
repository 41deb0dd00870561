"""Topic names of the edgeship MQTT layout, as pure functions.

Everything a device publishes or receives lives under ``{prefix}/{fleet}/{device}/``
(prefix ``edgeship/v1``), so one broker ACL pattern confines a device to its subtree
(see docs/mqtt.md). Fleet and device names are single topic levels: no ``/``, ``+``,
``#`` or ``$`` and not empty, checked by :func:`check_level`. The leaf of each message kind
comes from the catalogue in :mod:`.messages`.

A rollout controller's own topics live under ``{prefix}/_rollouts/{fleet}/{id}/{leaf}``
(leaves in :data:`ROLLOUT_LEAVES`): ``_rollouts`` cannot be a fleet name (a level starts
with a letter or digit), so they never collide with a device's. :func:`rollout_topic`
builds them, :func:`rollouts_filter` subscribes to their states, :func:`split_rollout_topic`
parses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .messages import MESSAGES, Kind

DEFAULT_PREFIX = "edgeship/v1"
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: Commands the agent answers on ``cmd/{name}``.
COMMANDS = ("rollback", "rebirth", "cancel", "retry", "profile")
#: the level after the prefix under which the rollout controllers' topics live
ROLLOUTS = "_rollouts"
#: a rollout's topics: its controller's claim, the operator's control, the controller's state
ROLLOUT_LEAVES = ("claim", "control", "state")
#: how a variable level is named in error messages
_LEVEL_NAMES = {"id": "deployment id", "name": "command"}


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

    def of(self, kind: Kind, **levels: str) -> str:
        """The topic of ``kind``; ``id=`` / ``name=`` fill its variable level.

        Raises:
            ValueError: an unsafe level, or a level the kind needs and did not get.
        """
        return self._format(kind, {k: check_level(_LEVEL_NAMES.get(k, k), v) for k, v in levels.items()})

    def _format(self, kind: Kind, levels: dict[str, str]) -> str:
        try:
            return f"{self.base}/" + MESSAGES[kind].leaf.format(**levels)
        except KeyError as e:
            raise ValueError(f"the topic of {kind.value} needs level {e}") from None

    @property
    def status(self) -> str:
        return self.of(Kind.STATUS)

    @property
    def reported(self) -> str:
        return self.of(Kind.REPORTED)

    @property
    def desired(self) -> str:
        return self.of(Kind.DESIRED)

    @property
    def cmd_filter(self) -> str:
        return self._format(Kind.CMD, {"name": "+"})

    def cmd(self, name: str) -> str:
        return self.of(Kind.CMD, name=name)

    def cmd_response(self, name: str) -> str:
        """Default response topic when a command carries no (acceptable) Response Topic."""
        return self.of(Kind.CMD_RESPONSE, name=name)

    def deploy(self, deployment_id: str) -> str:
        return self.of(Kind.DEPLOY, id=deployment_id)

    @property
    def metrics(self) -> str:
        return self.of(Kind.METRICS)

    @property
    def events(self) -> str:
        return self.of(Kind.EVENT)

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


def rollout_topic(*, fleet: str, rollout: str, leaf: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``{prefix}/_rollouts/{fleet}/{rollout}/{leaf}``: one of a rollout's :data:`ROLLOUT_LEAVES`.
    Raises ValueError on a fleet or rollout id that is not a single topic level."""
    if leaf not in ROLLOUT_LEAVES:
        raise ValueError(f"rollout topic leaf {leaf!r} is not one of {', '.join(ROLLOUT_LEAVES)}")
    return f"{prefix}/{ROLLOUTS}/{check_level('fleet', fleet)}/{check_level('rollout id', rollout)}/{leaf}"


def rollouts_filter(*, fleet: str | None = None, prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the retained ``state`` of every rollout of ``fleet`` (of every
    fleet when None). Raises ValueError on an unsafe fleet name."""
    level = "+" if fleet is None else check_level("fleet", fleet)
    return f"{prefix}/{ROLLOUTS}/{level}/+/state"


def in_rollouts(topic: str, *, prefix: str = DEFAULT_PREFIX) -> bool:
    """True for any topic under ``{prefix}/_rollouts/`` (well formed or not): not a device's."""
    return topic.startswith(f"{prefix}/{ROLLOUTS}/")


def split_rollout_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str] | None:
    """``(fleet, rollout id, leaf)`` for ``{prefix}/_rollouts/{fleet}/{id}/{leaf}``, or None when
    ``topic`` is not one (outside the subtree, or not exactly those three levels)."""
    if not in_rollouts(topic, prefix=prefix):
        return None
    parts = topic[len(f"{prefix}/{ROLLOUTS}/"):].split("/")
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]
