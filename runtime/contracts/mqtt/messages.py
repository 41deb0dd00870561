"""The catalogue of MQTT messages: every kind, its topic under a device, who sends it, retained or not.

This table is the one place a message type is added: give it a :class:`Kind` (its payload
schema is ``edgeship.<kind>/1``), a row in :data:`MESSAGES` (topic leaf, sender, retained),
then its builder or parser in :mod:`.payloads`. :class:`~.topics.DeviceTopics` builds topic
names from this table, the agent and the operator client take the retain flag from it, and
tests check docs/mosquitto/acl against it (a device may write exactly what it sends).

Every row the operator sends is signed (:mod:`.signing`): the agent subscribes to those
rows (:func:`operator_filters`), finds the row of an inbound topic with :func:`match_leaf`
and refuses it unless the operator key signed it for this topic and this device. A new
operator row is signed and checked without further code.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

SCHEMA_VERSION = 1


class Kind(str, enum.Enum):
    STATUS = "status"
    REPORTED = "reported"
    DESIRED = "desired"
    DEPLOY = "deploy"
    METRICS = "metrics"
    EVENT = "event"
    CMD = "cmd"
    CMD_RESPONSE = "cmd_response"
    CAPTURE_PULL = "capture_pull"
    CAPTURE_DATA = "capture_data"
    DRIFT = "drift"
    PROFILE_CHUNK = "profile_chunk"

    @property
    def schema(self) -> str:
        """The payload's ``schema`` field, e.g. ``edgeship.status/1``."""
        return f"edgeship.{self.value}/{SCHEMA_VERSION}"


class Sender(str, enum.Enum):
    DEVICE = "device"        # the agent publishes it (the broker ACL lets it write the topic)
    OPERATOR = "operator"    # `edgeship push` / `edgeship fleet` publish it; the device reads it


@dataclass(frozen=True)
class MessageSpec:
    kind: Kind
    #: topic under ``{prefix}/{fleet}/{device}/``; ``{id}`` and ``{name}`` are one topic level each
    leaf: str
    sender: Sender
    retained: bool


MESSAGES: dict[Kind, MessageSpec] = {m.kind: m for m in (
    MessageSpec(Kind.STATUS, "status", Sender.DEVICE, retained=True),          # birth, Will, death
    MessageSpec(Kind.REPORTED, "reported", Sender.DEVICE, retained=True),      # the device's own word
    MessageSpec(Kind.DESIRED, "desired", Sender.OPERATOR, retained=True),      # versioned goal state
    MessageSpec(Kind.DEPLOY, "deploy/{id}", Sender.DEVICE, retained=False),    # progress of one deployment
    MessageSpec(Kind.METRICS, "telemetry/metrics", Sender.DEVICE, retained=False),
    MessageSpec(Kind.EVENT, "events", Sender.DEVICE, retained=False),          # alarms, rejections
    MessageSpec(Kind.CMD, "cmd/{name}", Sender.OPERATOR, retained=False),      # rollback, rebirth, cancel
    MessageSpec(Kind.CMD_RESPONSE, "cmd/{name}/resp", Sender.DEVICE, retained=False),
    # one round of a capture pull, and what the device answers it (runtime.contracts.capture.pull)
    MessageSpec(Kind.CAPTURE_PULL, "capture/pull", Sender.OPERATOR, retained=False),
    MessageSpec(Kind.CAPTURE_DATA, "capture/data/{id}", Sender.DEVICE, retained=False),
    # drift scores of the model served now (the device's current state, like status)
    MessageSpec(Kind.DRIFT, "telemetry/drift", Sender.DEVICE, retained=True),
    # one chunk of a `profile` command's result (runtime.contracts.mqtt.telemetry)
    MessageSpec(Kind.PROFILE_CHUNK, "telemetry/profile/{id}", Sender.DEVICE, retained=False),
)}


def retained(kind: Kind) -> bool:
    """Whether ``kind`` is published retained."""
    return MESSAGES[kind].retained


def operator_specs() -> list[MessageSpec]:
    """The rows the operator sends (desired state, commands): each one travels signed."""
    return [m for m in MESSAGES.values() if m.sender is Sender.OPERATOR]


def _leaf_pattern(leaf: str) -> re.Pattern:
    parts = re.split(r"(\{[a-z]+\})", leaf)
    return re.compile("^" + "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p)
                                    for p in parts) + "$")


def match_leaf(leaf: str, *, sender: Sender) -> tuple[MessageSpec, dict[str, str]] | None:
    """The row of ``sender`` whose leaf pattern matches ``leaf`` (``cmd/rollback`` -> the CMD row
    with ``{"name": "rollback"}``), or None. A row with fixed text wins over a pattern."""
    found = [(m, mt.groupdict()) for m in MESSAGES.values() if m.sender is sender
             and (mt := _leaf_pattern(m.leaf).match(leaf))]
    found.sort(key=lambda f: len(f[1]))
    return found[0] if found else None


def operator_filters() -> list[str]:
    """Subscription filters (under a device's base topic) covering every operator row."""
    return sorted({re.sub(r"\{[a-z]+\}", "+", m.leaf) for m in operator_specs()})
