"""Durable outbound queue in SQLite (WAL mode): telemetry and events survive broker outages
and agent restarts.

Invariants:
- A row is deleted only by :meth:`DurableQueue.ack` (the broker's PUBACK for it) or by the
  budget policy, which counts every such drop in a persistent counter per class.
- ``msg_id`` values come from :class:`DurableQueue.next_msg_id`: monotonic across restarts
  (ids are reserved in blocks in the ``meta`` table; a crash only skips ids, never repeats).
  Queued rows use their ``msg_id`` as primary key, so id order is enqueue order.
- Budgets: each class has a byte budget, and all classes share a total budget. A class over
  its budget loses its own oldest rows; over the total budget, rows are dropped oldest-first
  from the lowest-priority class first (metrics, then deploy, then events), so alarms outlive
  measurements.

Thread safety: one connection guarded by a lock; the producer threads (inference observers,
control handlers) and the sender thread share it.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import QueueError

_ID_BLOCK = 1000


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


@dataclass(frozen=True)
class QueuedMessage:
    msg_id: int
    cls: MessageClass
    topic: str
    body: str          # encoded JSON object without seq/hist (see payloads.stamp)
    boot_id: str
    mono_ms: int


@dataclass(frozen=True)
class QueueStats:
    depth: int
    bytes: int
    dropped: dict[str, int]
    #: boot id and CLOCK_MONOTONIC ms of the oldest queued message (None when empty)
    oldest_boot_id: str | None = None
    oldest_mono_ms: int | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  msg_id INTEGER PRIMARY KEY, cls TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL,
  boot_id TEXT NOT NULL, mono_ms INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_cls ON outbox (cls, msg_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class DurableQueue:
    """SQLite-backed FIFO with acknowledgement-based deletion and per-class budgets."""

    def __init__(self, path: str | Path, *, budgets: Budgets) -> None:
        """Open (create) the queue at ``path``.

        Raises:
            QueueError: the file cannot be opened or is not a queue database.
        """
        self.path = Path(path)
        self.budgets = budgets
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed row survives an agent crash; power loss may lose
            # the last few commits but never corrupts the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Budgets count payload bytes; keep the WAL file itself bounded too (it is reused,
            # not shrunk, after checkpoints unless limited). Freed pages of the main file are
            # reused, so the file stays near the budgets' peak.
            self._db.execute("PRAGMA journal_size_limit=4194304")
            self._db.executescript(_SCHEMA)
            self._bytes = {c: 0 for c in MessageClass}
            for cls, total in self._db.execute("SELECT cls, COALESCE(SUM(size),0) FROM outbox GROUP BY cls"):
                self._bytes[MessageClass(cls)] = total
            self._next_id, self._reserved = self._load_ids()
        except sqlite3.Error as e:
            raise QueueError(f"cannot open telemetry queue {self.path}: {e}") from e

    # ------------------------------------------------------------ ids
    def _meta(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                         (key, value))

    def _load_ids(self) -> tuple[int, int]:
        reserved = self._meta("reserved_upto")
        max_row = self._db.execute("SELECT COALESCE(MAX(msg_id),0) FROM outbox").fetchone()[0]
        start = max(reserved, max_row) + 1
        return start, start - 1

    def next_msg_id(self) -> int:
        """A fresh message id, larger than every id handed out before (also across restarts)."""
        with self._lock:
            return self._take_id()

    def _take_id(self) -> int:
        if self._next_id > self._reserved:
            self._reserved = self._next_id + _ID_BLOCK - 1
            self._set_meta("reserved_upto", self._reserved)
        value = self._next_id
        self._next_id += 1
        return value

    # ------------------------------------------------------------ write
    def put(self, *, cls: MessageClass, topic: str, body: str, boot_id: str, mono_ms: int,
            msg_id: int) -> None:
        """Store one message durably, then enforce the budgets.

        Raises:
            QueueError: the database cannot be written (disk full, I/O error).
        """
        size = len(body) + len(topic)
        with self._lock:
            try:
                self._db.execute("INSERT INTO outbox VALUES (?,?,?,?,?,?,?)",
                                 (msg_id, cls.value, topic, body, boot_id, mono_ms, size))
                self._bytes[cls] += size
                self._enforce(cls)
            except sqlite3.Error as e:
                raise QueueError(f"telemetry queue {self.path}: cannot store message: {e}") from e

    def _enforce(self, cls: MessageClass) -> None:
        while self._bytes[cls] > self.budgets.for_class(cls) and self._drop_oldest(cls):
            pass
        while sum(self._bytes.values()) > self.budgets.total_bytes:
            victim = next((c for c in DROP_ORDER if self._bytes[c] > 0), None)
            if victim is None or not self._drop_oldest(victim):
                break

    def _drop_oldest(self, cls: MessageClass) -> bool:
        row = self._db.execute("SELECT msg_id, size FROM outbox WHERE cls=? ORDER BY msg_id LIMIT 1",
                               (cls.value,)).fetchone()
        if row is None:
            return False
        self._db.execute("DELETE FROM outbox WHERE msg_id=?", (row[0],))
        self._bytes[cls] -= row[1]
        key = f"dropped.{cls.value}"
        self._set_meta(key, self._meta(key) + 1)
        return True

    # ------------------------------------------------------------ read / ack
    def peek(self, *, after_id: int, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` messages with ``msg_id > after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT msg_id, cls, topic, body, boot_id, mono_ms FROM outbox WHERE msg_id>? "
                "ORDER BY msg_id LIMIT ?", (after_id, limit)).fetchall()
        return [QueuedMessage(r[0], MessageClass(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def ack(self, msg_ids: list[int]) -> None:
        """Delete messages the broker acknowledged (unknown ids, e.g. dropped ones, are ignored)."""
        if not msg_ids:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for chunk in range(0, len(msg_ids), 500):
                    ids = msg_ids[chunk:chunk + 500]
                    marks = ",".join("?" * len(ids))
                    for cls, size in self._db.execute(
                            f"SELECT cls, COALESCE(SUM(size),0) FROM outbox WHERE msg_id IN ({marks}) GROUP BY cls", ids):
                        self._bytes[MessageClass(cls)] -= size
                    self._db.execute(f"DELETE FROM outbox WHERE msg_id IN ({marks})", ids)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._db.execute("ROLLBACK")
                raise QueueError(f"telemetry queue {self.path}: cannot delete acknowledged rows: {e}") from e

    def stats(self) -> QueueStats:
        with self._lock:
            depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            dropped = {c.value: self._meta(f"dropped.{c.value}") for c in MessageClass}
            oldest = self._db.execute("SELECT boot_id, mono_ms FROM outbox ORDER BY msg_id LIMIT 1").fetchone()
            return QueueStats(depth=depth, bytes=sum(self._bytes.values()), dropped=dropped,
                              oldest_boot_id=oldest[0] if oldest else None,
                              oldest_mono_ms=oldest[1] if oldest else None)

    def close(self) -> None:
        with self._lock:
            self._db.close()
