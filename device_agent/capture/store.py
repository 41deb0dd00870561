"""The capture store on the device: a capture set (``index.json`` + one ``.npz`` per capture,
runtime.contracts.capture.fileformat) under ``[capture] dir``, bounded on disk.

Writes: each capture file appears atomically (``AtomicFile``: temp file, fsync, rename, mode
0600 in a 0700 directory; the directory is fsynced by the next index write, so a crash loses at
most the captures of the last ``index_interval_s``, never leaves a partial one); the index is replaced atomically after the files it lists
exist (at most every ``index_interval_s``, and on close), and the files of evicted, expired or
pulled captures are deleted only after an index without them was written (evictions wait for
the next index write, so the disk budget may be exceeded by at most ``index_interval_s`` of
captures). So a crash leaves complete capture files, some
perhaps not yet listed: at the next start, complete files missing from the index are
re-adopted from their own ``__meta__`` (each file describes itself), temp files are deleted,
index entries whose file is gone are dropped, and a corrupt index is rebuilt from the files.

Budgets are decided by :func:`.policy.admit` (a rule's count/bytes, the disk budget, priority);
the store also refuses a capture while the file system has less than ``min_free_bytes`` free.
Thread-safe (one lock): the recorder's writer thread writes, the pull reads and deletes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from runtime.contracts.capture.fileformat import (
    INDEX, SUFFIX, Capture, CaptureFormatError, CaptureIndex, IndexEntry, decode, encode, listed_files, read_index,
)
from runtime.contracts.capture.rules import CaptureRule
from runtime.fsutil import AtomicFile, atomic_write_bytes

from ..logs import get_logger
from . import policy

log = get_logger("capture")


@dataclass
class StoreCounters:
    stored: Counter = field(default_factory=Counter)     # by rule
    evicted: Counter = field(default_factory=Counter)    # by rule (budget)
    expired: int = 0
    refused: Counter = field(default_factory=Counter)    # by reason: too_large, disk_budget, disk_low, unknown_rule
    adopted: int = 0                                     # files re-listed at start (written, not yet indexed)
    removed_after_pull: int = 0


class CaptureStore:
    def __init__(self, root: str | os.PathLike, *, disk_budget_bytes: int, min_free_bytes: int = 0,
                 index_interval_s: float = 0.5, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.disk_budget_bytes = disk_budget_bytes
        self.min_free_bytes = min_free_bytes
        self.index_interval_s = index_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self.counters = StoreCounters()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._entries: dict[str, IndexEntry] = {}
        self._doomed: list[str] = []  # files removed from the entries, deleted after the next index write
        self._dirty = False
        self._last_index = 0.0
        self._recover()

    # ------------------------------------------------------------ start
    def _recover(self) -> None:
        for p in self.root.glob(".tmp.*"):
            p.unlink(missing_ok=True)
        try:
            index = read_index(self.root)
        except CaptureFormatError as e:
            if (self.root / INDEX).exists():
                bad = self.root / f"{INDEX}.corrupt"
                os.replace(self.root / INDEX, bad)
                log.error("capture.index_corrupt", path=str(bad), error=str(e))
            index = CaptureIndex()
        for e in index.entries:
            if (self.root / e.path).is_file():
                self._entries[e.meta.id] = e
        listed = {e.path for e in self._entries.values()}
        for path in sorted(listed_files(self.root) - listed):
            self._adopt(path)
        if len(self._entries) != len(index.entries) or self.counters.adopted:
            self._dirty = True
            self.flush_index(force=True)

    def _adopt(self, path: str) -> None:
        p = self.root / path
        try:
            data = p.read_bytes()
            cap = decode(data, where=str(p))
        except (OSError, CaptureFormatError) as e:
            log.warning("capture.orphan_removed", path=str(p), error=str(e))
            p.unlink(missing_ok=True)
            return
        self._entries[cap.meta.id] = IndexEntry.of(path, data, cap.meta)
        self.counters.adopted += 1

    # ------------------------------------------------------------ writing
    def put(self, capture: Capture, *, rules: Mapping[str, CaptureRule]) -> str | None:
        """Store one capture under the budgets. Returns why it was refused, or None when stored.

        Raises:
            OSError: the file could not be written (nothing is listed then).
        """
        data = encode(capture)
        m = capture.meta
        new = policy.Stored(m.id, m.rule, len(data), m.ts_ms)
        with self._lock:
            adm = policy.admit(self._stored(), new, rules=rules, disk_budget_bytes=self.disk_budget_bytes)
            if adm.accept and self._free_bytes() - len(data) < self.min_free_bytes:
                adm = policy.Admission(False, reason="disk_low")
            if not adm.accept:
                self.counters.refused[adm.reason] += 1
                return adm.reason
            self._remove(adm.evict, why="evicted")
            path = f"{m.id}{SUFFIX}"
            with AtomicFile(self.root, mode=0o600, prefix=".tmp.") as f:
                f.file.write(data)
                f.commit_before_dir_sync(self.root / path)  # the index write fsyncs the directory
            self._entries[m.id] = IndexEntry.of(path, data, m)
            self.counters.stored[m.rule] += 1
            self._dirty = True
        return None

    def flush_index(self, *, force: bool = False) -> bool:
        """Write the index if it changed (at most every ``index_interval_s`` unless ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not self._dirty or (not force and now - self._last_index < self.index_interval_s):
                return False
            self._write_index()
            self._last_index = now
            return True

    def _write_index(self) -> None:
        # with the lock held; the files of removed entries go once no index lists them
        atomic_write_bytes(self.root / INDEX, CaptureIndex(tuple(self._entries.values())).to_bytes(), mode=0o600)
        self._dirty = False
        doomed, self._doomed = self._doomed, []
        for path in doomed:
            (self.root / path).unlink(missing_ok=True)

    def sweep(self, *, rules: Mapping[str, CaptureRule], default_retention_s: float) -> int:
        """Delete expired captures. Returns how many."""
        with self._lock:
            ids = policy.expired(self._stored(), rules=rules, now_ms=int(self._clock() * 1000),
                                 default_retention_s=default_retention_s)
            self._remove(ids, why="expired")
            if ids:
                self._write_index()
            return len(ids)

    def remove(self, ids: Iterable[str]) -> list[str]:
        """Delete captures the operator received and acknowledged (index first, then the files).
        Returns the ids that were here."""
        with self._lock:
            ids = [i for i in ids if i in self._entries]
            self._remove(ids, why="pulled")
            if ids:
                self._write_index()
            return ids

    def _remove(self, ids: Iterable[str], *, why: str) -> None:
        # with the lock held: the files go after the next index write (one without them)
        gone = [self._entries.pop(i) for i in list(ids) if i in self._entries]
        if not gone:
            return
        self._dirty = True
        for e in gone:
            self._doomed.append(e.path)
            if why == "evicted":
                self.counters.evicted[e.meta.rule] += 1
            elif why == "expired":
                self.counters.expired += 1
            else:
                self.counters.removed_after_pull += 1

    # ------------------------------------------------------------ reading
    def entries(self, *, since_ms: int | None = None) -> list[IndexEntry]:
        """The stored captures, oldest first (``since_ms``: those at or after it)."""
        with self._lock:
            es = sorted(self._entries.values(), key=lambda e: (e.meta.ts_ms, e.meta.id))
        return [e for e in es if since_ms is None or e.meta.ts_ms >= since_ms]

    def entry(self, capture_id: str) -> IndexEntry | None:
        with self._lock:
            return self._entries.get(capture_id)

    def read(self, entry: IndexEntry) -> bytes:
        """A capture file's bytes. Raises OSError."""
        return (self.root / entry.path).read_bytes()

    def usage(self) -> dict:
        with self._lock:
            per = Counter()
            for e in self._entries.values():
                per[e.meta.rule] += e.bytes
            return {"captures": len(self._entries), "bytes": sum(per.values()), "bytes_by_rule": dict(per),
                    "disk_budget_bytes": self.disk_budget_bytes}

    def close(self) -> None:
        self.flush_index(force=True)

    # ------------------------------------------------------------ helpers
    def _stored(self) -> list[policy.Stored]:
        return [policy.Stored(e.meta.id, e.meta.rule, e.bytes, e.meta.ts_ms) for e in self._entries.values()]

    def _free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize
