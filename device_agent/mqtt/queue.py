"""Durable outbound queue in SQLite (WAL mode): telemetry and events survive broker outages
and agent restarts.

The guarantee (docs/mqtt.md, "What queued means"): a message is *queued* once the SQLite
transaction holding its row has committed (WAL, ``synchronous=NORMAL``). A kill -9 of the
process after that point loses nothing: the committed WAL frames are in the OS page cache and
SQLite recovers them at the next open. A power loss or kernel crash may roll back the newest
commits (NORMAL does not fsync every commit) but never corrupts the file. A message whose
commit had not ended when the process died is either in a transaction that committed (then it
is delivered) or absent entirely: a batch is all or nothing.

When a caller knows (:mod:`.groupcommit` batches the transactions):
- :meth:`DurableQueue.append`, :meth:`~DurableQueue.append_many`, :meth:`~DurableQueue.put`
  return once their rows are queued (concurrent callers share a transaction);
- :meth:`~DurableQueue.stage` returns at once: the row is *accepted*, not queued. It is
  queued by the next commit (the next ``append``/``flush`` of any thread: staging order is
  commit order), and ``stage`` commits itself once ``max_staged`` rows are waiting. So a
  kill -9 loses at most the staged rows no commit has covered yet (fewer than ``max_staged``);
  :meth:`~DurableQueue.flush` returning says every row staged before it is queued.

Invariants:
- ``msg_id`` values are monotonic across restarts (reserved in blocks in ``meta``, the
  reservation committed before any id of the block is used; a crash only skips ids). Rows
  enter the table in id order (ids are taken and rows staged under one lock, batches commit
  one at a time), so a reader's cursor never passes an id whose row commits later.
- A row is deleted only by :meth:`ack` (the broker's PUBACK for it) or by the budget policy,
  which counts every such drop in a persistent counter per class.
- Budgets: each class has a byte budget, all classes share a total budget. A class over its
  budget loses its own oldest rows; over the total budget, rows are dropped oldest-first from
  the lowest-priority class first (metrics, then deploy, then events), so alarms outlive
  measurements. Enforced in the transaction that inserts the batch.
- The sender reads through a bounded window (:class:`~.tail.CommittedTail`) that the commits
  feed directly, so a batch is published without reading it back; a backlog is read ahead
  from disk in chunks. The disk stays the source of truth.

Thread safety: one connection, used only under ``_db_lock``; staging under ``_stage``.
Lock order: ``_stage`` before ``_db_lock``; a committing caller holds only ``_db_lock``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from ..store import checkpoint
from .errors import QueueError
from .groupcommit import GroupCommit
from .outbox import (  # noqa: F401  (the queue's values, importable from here as before)
    DROP_ORDER, Budgets, Builder, MessageClass, QueuedMessage, QueueStats, read_boot_id,
)
from .tail import CommittedTail

_ID_BLOCK = 1000
_READ_AHEAD = 512   # rows read from disk at a time when the sender's window runs dry

#: crash-test checkpoints (``EDGESHIP_TEST_KILL_AT``, see device_agent.store.checkpoint)
KILL_BEFORE_COMMIT = "queue.before_commit"   # the batch is inserted, COMMIT not yet run
KILL_AFTER_COMMIT = "queue.after_commit"     # committed, its callers not yet told


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  msg_id INTEGER PRIMARY KEY, cls TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL,
  boot_id TEXT NOT NULL, mono_ms INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_cls ON outbox (cls, msg_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class DurableQueue:
    """SQLite-backed FIFO with group-committed appends, acknowledgement-based deletion and
    per-class budgets."""

    def __init__(self, path: str | Path, *, budgets: Budgets, boot_id: str | None = None,
                 max_staged: int = 1024, tail_rows: int = 4096, tail_bytes: int = 2 << 20) -> None:
        """Open (create) the queue at ``path``. ``boot_id`` (default: this kernel's) dates the
        rows for :meth:`oldest_age_s`; ``max_staged`` bounds the rows :meth:`stage` leaves
        uncommitted; ``tail_rows``/``tail_bytes`` bound the in-memory copy of the newest
        committed rows.

        Raises:
            QueueError: the file cannot be opened or is not a queue database.
        """
        self.path = Path(path)
        self.budgets = budgets
        self.boot_id = boot_id or read_boot_id()
        self._db_lock = threading.Lock()
        self._group: GroupCommit[QueuedMessage] = GroupCommit(self._write_batch, max_staged=max_staged)
        self._stage = self._group.lock
        self._tail: CommittedTail[QueuedMessage] = CommittedTail(max_rows=tail_rows, max_bytes=tail_bytes)
        self._ack_commits = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed row survives an agent crash (kill -9); power loss
            # may lose the last few commits but never corrupts the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Budgets count payload bytes; keep the WAL file itself bounded too (it is reused,
            # not shrunk, after checkpoints unless limited). Freed pages of the main file are
            # reused, so the file stays near the budgets' peak.
            self._db.execute("PRAGMA journal_size_limit=4194304")
            self._db.executescript(_SCHEMA)
            self._load_accounting()
            self._next_id, self._reserved = self._load_ids()
        except sqlite3.Error as e:
            raise QueueError(f"cannot open telemetry queue {self.path}: {e}") from e

    def _load_accounting(self) -> None:
        # the in-memory figures stats() and oldest_age_s() read without the lock (each object is
        # built whole, then swapped in): bytes and rows per class, drop counters, the oldest row
        size, rows = {c: 0 for c in MessageClass}, 0
        for cls, total, n in self._db.execute(
                "SELECT cls, COALESCE(SUM(size),0), COUNT(*) FROM outbox GROUP BY cls"):
            size[MessageClass(cls)] = total
            rows += n
        self._bytes, self._rows = size, rows
        self._dropped = {c.value: self._meta(f"dropped.{c.value}") for c in MessageClass}
        self._load_head()

    def _load_head(self) -> None:
        row = self._db.execute("SELECT msg_id, boot_id, mono_ms, body FROM outbox ORDER BY msg_id LIMIT 1").fetchone()
        self._head = None if row is None else self._origin(*row)

    def _origin(self, msg_id: int, boot_id: str, mono_ms: int, body: str) -> tuple:
        """(msg_id, clock, when) of a row: CLOCK_MONOTONIC for rows of this boot, else the wall
        clock of the row's ``ts_ms`` (``when`` None: a row of another boot without a readable clock)."""
        if boot_id == self.boot_id:
            return msg_id, time.monotonic, mono_ms / 1000.0
        try:
            return msg_id, time.time, float(json.loads(body)["ts_ms"]) / 1000.0
        except (ValueError, KeyError, TypeError):
            return msg_id, time.time, None

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
        """A fresh message id, larger than every id handed out before (also across restarts),
        for a message that is not queued (retained state, command responses)."""
        with self._stage:
            return self._take_id()

    def _take_id(self) -> int:  # under _stage
        if self._next_id > self._reserved:
            with self._db_lock:  # committed on its own, before any id of the block is used
                self._set_meta("reserved_upto", self._next_id + _ID_BLOCK - 1)
            self._reserved = self._next_id + _ID_BLOCK - 1
        value = self._next_id
        self._next_id += 1
        return value

    # ------------------------------------------------------------ write (group commit)
    def append(self, build: Builder) -> QueuedMessage:
        """Allocate the next msg_id, build the row with it (``build(msg_id)``) and return it
        once it is queued (committed; see the module docstring).

        Raises:
            QueueError: the database cannot be written (disk full, I/O error); nothing of
                the batch that held the row was stored.
        """
        return self.append_many([build])[0]

    def append_many(self, builds: Iterable[Builder]) -> list[QueuedMessage]:
        """:meth:`append` for several rows: consecutive ids, one transaction, all or nothing.

        Raises:
            QueueError: as :meth:`append`.
        """
        with self._stage:  # ids taken and rows staged in one hold: staging order is id order
            rows = [build(self._take_id()) for build in builds]
            self._group.commit(rows)
        return rows

    def stage(self, build: Builder) -> QueuedMessage:
        """:meth:`append` without waiting: returns the row *accepted*, not yet queued. The next
        commit queues it (any thread's append or flush; this call commits itself when
        ``max_staged`` rows are waiting).

        Raises:
            QueueError: this call had to commit and the commit failed (the row is not queued).
        """
        with self._stage:
            row = build(self._take_id())
            self._group.stage([row])
        return row

    def flush(self) -> None:
        """Commit what is staged; returns once every row staged before the call is queued.

        Raises:
            QueueError: the commit holding the newest of those rows failed (rows of earlier
                failed commits are counted in ``stats().lost_unqueued``).
        """
        with self._stage:
            self._group.flush()

    def put(self, *, cls: MessageClass, topic: str, body: str, boot_id: str, mono_ms: int,
            msg_id: int) -> None:
        """Store one message whose id the caller took from :meth:`next_msg_id`; returns once it
        is queued. Concurrent callers must insert in id order themselves (use
        :meth:`append`, which does).

        Raises:
            QueueError: the database cannot be written (disk full, I/O error).
        """
        with self._stage:
            self._group.commit([QueuedMessage(msg_id, cls, topic, body, boot_id, mono_ms)])

    def _write_batch(self, rows: list[QueuedMessage]) -> None:
        with self._db_lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?)",
                                     [(m.msg_id, m.cls.value, m.topic, m.body, m.boot_id, m.mono_ms, m.size)
                                      for m in rows])
                for m in rows:
                    self._bytes[m.cls] += m.size
                self._rows += len(rows)
                dropped = self._enforce({m.cls for m in rows})
                checkpoint(KILL_BEFORE_COMMIT)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise QueueError(f"telemetry queue {self.path}: cannot store {len(rows)} message(s): {e}") from e
            checkpoint(KILL_AFTER_COMMIT)
            if dropped:
                self._tail.clear()  # dropped rows may be in it: read them from disk again
            else:
                self._tail.extend(rows)
            if dropped or (self._head is not None and self._head[0] < 0):
                self._reload_head()
            elif self._head is None:  # the queue was empty: its oldest row is the batch's first
                m = rows[0]
                self._head = self._origin(m.msg_id, m.boot_id, m.mono_ms, m.body)

    def _reload_head(self) -> None:  # under _db_lock, after a commit that may have removed the oldest row
        try:
            self._load_head()
        except sqlite3.Error:
            self._head = None if self._rows == 0 else (-1, time.monotonic, None)  # unknown: read at the next commit

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._load_accounting()  # undo the in-memory counts of the failed batch
        except sqlite3.Error:
            pass  # the error that brought us here is the one reported
        self._tail.clear()

    def _enforce(self, touched: set[MessageClass]) -> int:
        """Drop oldest-first until every budget holds; returns how many rows were dropped."""
        dropped = 0
        for cls in DROP_ORDER:
            if cls in touched:
                dropped += self._drop_oldest(cls, self._bytes[cls] - self.budgets.for_class(cls))
        for cls in DROP_ORDER:
            excess = sum(self._bytes.values()) - self.budgets.total_bytes
            if excess <= 0:
                break
            dropped += self._drop_oldest(cls, excess)
        return dropped

    def _drop_oldest(self, cls: MessageClass, excess: int) -> int:
        """Delete the oldest rows of ``cls`` until ``excess`` bytes are freed (or none is left)."""
        freed, upto, n = 0, 0, 0
        while freed < excess:
            chunk = self._db.execute("SELECT msg_id, size FROM outbox WHERE cls=? AND msg_id>? "
                                     "ORDER BY msg_id LIMIT 256", (cls.value, upto)).fetchall()
            if not chunk:
                break
            for msg_id, size in chunk:
                freed, upto, n = freed + size, msg_id, n + 1
                if freed >= excess:
                    break
        if n == 0:
            return 0
        self._db.execute("DELETE FROM outbox WHERE cls=? AND msg_id<=?", (cls.value, upto))
        self._bytes[cls] -= freed
        self._rows -= n
        key = f"dropped.{cls.value}"
        self._set_meta(key, self._meta(key) + n)
        self._dropped[cls.value] = self._dropped.get(cls.value, 0) + n  # reloaded if the batch rolls back
        return n

    # ------------------------------------------------------------ read / ack
    def peek(self, *, after_id: int, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` messages with ``msg_id > after_id``, oldest first, read from disk."""
        with self._db_lock:
            return self._select(after_id, limit)

    def _select(self, after_id: int, limit: int) -> list[QueuedMessage]:
        rows = self._db.execute(
            "SELECT msg_id, cls, topic, body, boot_id, mono_ms FROM outbox WHERE msg_id>? "
            "ORDER BY msg_id LIMIT ?", (after_id, limit)).fetchall()
        return [QueuedMessage(r[0], MessageClass(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def next_batch(self, *, after_id: int, limit: int) -> list[QueuedMessage]:
        """What :meth:`peek` returns, served from the sender's window (:mod:`.tail`): the
        newest commits straight from memory, a backlog read ahead from disk in chunks.

        Raises:
            QueueError: the database cannot be read.
        """
        with self._db_lock:
            rows = self._tail.take(after_id=after_id, limit=limit)
            if rows is not None and (len(rows) == limit or self._tail.current):
                return rows
            rows = rows or []  # the window ran dry (or knows nothing): read ahead from disk
            start = rows[-1].msg_id if rows else after_id
            chunk = max(limit, _READ_AHEAD)
            try:
                disk = self._select(start, chunk)
            except sqlite3.Error as e:
                raise QueueError(f"telemetry queue {self.path}: cannot read messages: {e}") from e
            # under the lock no commit can slip between this read and the window following commits
            self._tail.load(after_id=start, rows=disk, complete=len(disk) < chunk)
            return rows + (self._tail.take(after_id=start, limit=limit - len(rows)) or [])

    def unread(self, rows: list[QueuedMessage], *, after_id: int) -> None:
        """Give back the last rows :meth:`next_batch` returned that the caller did not send
        (``after_id``: the last one it did), so the next call returns them without a disk read."""
        with self._db_lock:
            self._tail.unread(rows, after_id=after_id)

    def ack(self, msg_ids: list[int]) -> None:
        """Delete messages the broker acknowledged, in one transaction (unknown ids, e.g.
        dropped ones, are ignored).

        Raises:
            QueueError: the rows cannot be deleted (they stay queued and are sent again).
        """
        self._delete(list(msg_ids), None)

    def ack_rows(self, rows: list[QueuedMessage]) -> None:
        """:meth:`ack` for rows the caller holds (as the sender does): their sizes are known,
        so the budget accounting needs no read back.

        Raises:
            QueueError: as :meth:`ack`.
        """
        self._delete([m.msg_id for m in rows], rows)

    def _delete(self, msg_ids: list[int], rows: list[QueuedMessage] | None) -> None:
        if not msg_ids:
            return
        with self._db_lock:
            try:
                self._db.execute("BEGIN")
                deleted = 0
                for chunk in range(0, len(msg_ids), 500):
                    ids = msg_ids[chunk:chunk + 500]
                    marks = ",".join("?" * len(ids))
                    if rows is None:
                        for cls, size, n in self._db.execute(
                                f"SELECT cls, COALESCE(SUM(size),0), COUNT(*) FROM outbox WHERE msg_id IN ({marks}) "
                                "GROUP BY cls", ids):
                            self._bytes[MessageClass(cls)] -= size
                            self._rows -= n
                    deleted += self._db.execute(f"DELETE FROM outbox WHERE msg_id IN ({marks})", ids).rowcount
                self._db.execute("COMMIT")
                self._ack_commits += 1
                if self._head is not None and (self._head[0] < 0 or self._head[0] in set(msg_ids)):
                    self._reload_head()
            except sqlite3.Error as e:
                self._rollback()
                raise QueueError(f"telemetry queue {self.path}: cannot delete acknowledged rows: {e}") from e
            if rows is not None:
                if deleted == len(rows):
                    for m in rows:
                        self._bytes[m.cls] -= m.size
                    self._rows -= deleted
                else:  # some were dropped by the budget meanwhile (and counted then): count again
                    self._load_accounting()

    # ------------------------------------------------------------ figures
    def depth(self) -> int:
        """Messages queued and not yet acknowledged (an in-memory count: cheap)."""
        return self._rows

    def oldest_age_s(self) -> float | None:
        """Age in seconds of the oldest queued message, None when the queue is empty (or its
        oldest row is of another boot without a readable ``ts_ms``). From CLOCK_MONOTONIC for rows
        of this boot, else from the row's wall-clock ``ts_ms``. No disk read and no lock: the
        oldest row is noted by the commits that change it (an insert into an empty queue, an
        ack or budget drop of that row), so the age is exact at every call."""
        head = self._head
        if head is None or head[2] is None:
            return None
        return max(0.0, head[1]() - head[2])

    def stats(self) -> QueueStats:
        """The queue's figures from memory (no disk read, no lock: it never waits for a commit;
        the rows of a batch being committed may be counted a moment before its COMMIT ends)."""
        g = self._group
        return QueueStats(depth=self._rows, bytes=sum(self._bytes.values()), dropped=dict(self._dropped),
                          commits=g.batches, rows_committed=g.items, ack_commits=self._ack_commits,
                          staged=g.staged, lost_unqueued=g.failed_items)

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
