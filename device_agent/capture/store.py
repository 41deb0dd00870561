"""The capture store on the device: a capture set (``index.json`` + segment files,
runtime.contracts.capture.fileformat and .segments) under ``[capture] dir``, bounded on disk.

Writes: each capture is appended to its rule's open segment (:mod:`.segfile`: one ``write``,
no file created per capture); before every index write the segments written since the last
one are fsynced, so the index lists only durable records; an index write (at most every
``index_interval_s``, and on close) appends what changed to the index's journal, or writes a
new snapshot from each entry's JSON kept since its capture was stored (:mod:`.indexfile`),
so it costs no re-serialisation of the whole set. A process crash loses no appended capture
(the next start re-adopts it), a power cut at most those of the last ``index_interval_s``;
none is ever listed partial. Captures evicted, expired or pulled leave the index at the next
index write and are erased (record marked, payload zeroed) right after it; a segment goes
once nothing in it is live (evictions wait for the next index write, so the disk budget may
be exceeded by at most ``index_interval_s`` of captures; erased records take disk space
until their segment goes: segments hold one rule each, whose captures go oldest first). At
the next start, complete records (and standalone ``.npz`` files of older stores) the index
does not list are re-adopted from their own ``__meta__``, cut-off segment tails and temp
files are deleted, entries whose record is gone are dropped, and a corrupt index is rebuilt
from the files.

Budgets are decided by :func:`.policy.admit` (a rule's count/bytes, the disk budget, priority;
:func:`.policy.admit_in_rule` on the per-rule totals the store keeps, when only the rule's
own captures are involved); the store also refuses a capture while the file system has less
than ``min_free_bytes`` free (checked with statvfs at most every second, less what was
written since). Thread-safe (one lock): the recorder's writer thread writes, the pull reads
and deletes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from runtime.contracts.capture.fileformat import (
    INDEX, SUFFIX, Capture, CaptureFormatError, CaptureIndex, IndexEntry, decode, encode_with_meta, listed_files,
    read_entry, read_index,
)
from runtime.contracts.capture.rules import CaptureRule

from ..logs import get_logger
from . import policy
from .indexfile import IndexWriter
from .segfile import SEGMENT_BYTES, SegmentSet

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
                 index_interval_s: float = 2.0, clock: Callable[[], float] = time.time,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
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
        self._texts: dict[str, str] = {}                          # id -> the entry's index JSON
        self._by_rule: dict[str, dict[str, policy.Stored]] = {}   # rule -> its captures, oldest first
        self._rule_bytes: Counter = Counter()
        self._total_bytes = 0
        self._free: tuple[float, int] = (-1e9, 0)                # (when statvfs was read, free bytes)
        self._segments = SegmentSet(self.root, max_bytes=segment_bytes)
        self._doomed: list[IndexEntry] = []  # removed from the entries, erased after the next index write
        self._added: dict[str, None] = {}   # ids stored since the last index write
        self._removed: list[str] = []       # ids removed since the last index write that it listed
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
        self._index = IndexWriter(self.root, journal=index.journal)
        listed = {e.meta.id: e for e in index.entries if e.segment or (self.root / e.path).is_file()}
        adopted = self._segments.recover(listed)
        self.counters.adopted += len(adopted)
        for e in sorted((*listed.values(), *adopted), key=lambda e: (e.meta.ts_ms, e.meta.id)):
            self._add(e)
        standalone = {e.path for e in self._entries.values() if e.segment is None}
        for path in sorted(listed_files(self.root) - standalone):
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
        self._add(IndexEntry.of(path, data, cap.meta))
        self.counters.adopted += 1

    # ------------------------------------------------------------ writing
    def put(self, capture: Capture, *, rules: Mapping[str, CaptureRule]) -> str | None:
        """Store one capture under the budgets. Returns why it was refused, or None when stored.

        Raises:
            OSError: the file could not be written (nothing is listed then).
        """
        data, meta_text = encode_with_meta(capture)
        m = capture.meta
        new = policy.Stored(m.id, m.rule, len(data), m.ts_ms)
        with self._lock:
            own = self._by_rule.get(m.rule, {})
            adm = policy.admit_in_rule(iter(own.values()), new, rule=rules.get(m.rule), own_count=len(own),
                                       own_bytes=self._rule_bytes[m.rule], total_bytes=self._total_bytes,
                                       disk_budget_bytes=self.disk_budget_bytes)
            if adm is None:  # the disk budget: captures of other rules may make room
                adm = policy.admit(self._stored(), new, rules=rules, disk_budget_bytes=self.disk_budget_bytes)
            if adm.accept and self.min_free_bytes > 0 and self._free_bytes() - len(data) < self.min_free_bytes:
                adm = policy.Admission(False, reason="disk_low")
            if not adm.accept:
                self.counters.refused[adm.reason] += 1
                return adm.reason
            self._remove(adm.evict, why="evicted")
            segment, offset = self._segments.append(m.rule, data)
            # the path of a checked id, the name of a segment it made: no need to check them again
            entry = IndexEntry(f"{m.id}{SUFFIX}", hashlib.sha256(data).hexdigest(), len(data), m, segment, offset)
            self._add(entry, meta_text)
            self._added[m.id] = None
            self._free = (self._free[0], self._free[1] - len(data))
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
        # with the lock held: the records it lists are made durable first; removed entries are
        # erased once no index lists them
        self._segments.sync()
        self._index.write(texts=lambda: [self._texts[i] for i in self._entries],
                          added=[self._texts[i] for i in self._added], removed=self._removed, segmented=True)
        self._added, self._removed = {}, []
        self._dirty = False
        doomed, self._doomed = self._doomed, []
        for e in doomed:
            if e.segment:
                self._segments.erase(e)
            else:
                (self.root / e.path).unlink(missing_ok=True)

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
            self._texts.pop(e.meta.id, None)
            self._by_rule[e.meta.rule].pop(e.meta.id, None)
            self._rule_bytes[e.meta.rule] -= e.bytes
            self._total_bytes -= e.bytes
            self._doomed.append(e)
            if self._added.pop(e.meta.id, False) is False:  # listed by an index write: journal its removal
                self._removed.append(e.meta.id)
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
        """A capture's bytes (its standalone ``.npz``). Raises OSError."""
        return read_entry(self.root, entry)

    def usage(self) -> dict:
        """Captures and bytes held, in total and by rule (from the running totals: no scan, cheap
        enough for every ``/metrics`` scrape)."""
        with self._lock:
            return {"captures": len(self._entries), "bytes": self._total_bytes,
                    "bytes_by_rule": {r: n for r, n in self._rule_bytes.items() if n > 0},
                    "captures_by_rule": {r: len(c) for r, c in self._by_rule.items() if c},
                    "disk_budget_bytes": self.disk_budget_bytes}

    def close(self) -> None:
        self.flush_index(force=True)
        with self._lock:
            self._segments.close()
            self._index.close()

    # ------------------------------------------------------------ helpers
    def _stored(self) -> list[policy.Stored]:
        return [policy.Stored(e.meta.id, e.meta.rule, e.bytes, e.meta.ts_ms) for e in self._entries.values()]

    def _add(self, e: IndexEntry, meta_text: str | None = None) -> None:
        # with the lock held (or at start)
        m = e.meta
        self._entries[m.id] = e
        self._texts[m.id] = e.to_text(meta_text)
        self._by_rule.setdefault(m.rule, {})[m.id] = policy.Stored(m.id, m.rule, e.bytes, m.ts_ms)
        self._rule_bytes[m.rule] += e.bytes
        self._total_bytes += e.bytes

    def _free_bytes(self) -> int:
        # statvfs at most every second; put() takes off what it wrote since
        now = time.monotonic()
        if now - self._free[0] >= 1.0:
            st = os.statvfs(self.root)
            self._free = (now, st.f_bavail * st.f_frsize)
        return self._free[1]
