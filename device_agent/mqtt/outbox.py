"""The values of the durable outbound queue (queue.py): message classes and their drop order,
budgets, a queued row, the queue's figures, and this boot's id that dates rows."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Callable, NamedTuple


def read_boot_id() -> str:
    """The kernel's boot id (pairs with CLOCK_MONOTONIC); a random one where it is not exposed."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return uuid.uuid4().hex


class MessageClass(str, enum.Enum):
    """Queued message classes, in the order they are dropped under the total budget."""

    METRICS = "metrics"
    DEPLOY = "deploy"
    EVENTS = "events"


DROP_ORDER = (MessageClass.METRICS, MessageClass.DEPLOY, MessageClass.EVENTS)


@dataclass(frozen=True)
class Budgets:
    events_bytes: int
    deploy_bytes: int
    metrics_bytes: int
    total_bytes: int

    def for_class(self, cls: MessageClass) -> int:
        return {MessageClass.EVENTS: self.events_bytes, MessageClass.DEPLOY: self.deploy_bytes,
                MessageClass.METRICS: self.metrics_bytes}[cls]


class QueuedMessage(NamedTuple):  # a tuple: made for every message, so cheap to make
    msg_id: int
    cls: MessageClass
    topic: str
    body: str          # encoded JSON object without seq/hist (see payloads.stamp)
    boot_id: str
    mono_ms: int

    @property
    def size(self) -> int:
        """What the budgets count: payload and topic characters."""
        return len(self.body) + len(self.topic)


@dataclass(frozen=True)
class QueueStats:
    depth: int
    bytes: int
    dropped: dict[str, int]
    commits: int = 0          # insert transactions since open
    rows_committed: int = 0   # rows they held (rows_committed / commits = mean batch)
    ack_commits: int = 0      # delete transactions of acknowledged rows since open
    staged: int = 0           # rows accepted by stage() and not yet in a commit
    lost_unqueued: int = 0    # rows whose commit failed since open (never queued)


#: builds the row for a freshly allocated msg_id (the envelope carries the id, so the
#: caller encodes only once it is known)
Builder = Callable[[int], QueuedMessage]
