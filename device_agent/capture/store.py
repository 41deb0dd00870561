"""The capture store on the device: a capture set (``index.json`` + segment files,
runtime.contracts.capture.fileformat and .segments) under ``[capture] dir``, bounded on disk.

Writes: each capture is appended to its rule's open segment (:mod:`.segfile`: one ``write``,
no file created per capture); before every index write the segments written since the last
one are fsynced, so the index lists only durable records; an index write (at most every
``index_interval_s``, and on close) appends what changed to the index's journal, or writes a
new snapshot from each entry's JSON kept since its capture was stored (:mod:`.indexfile`),
so it costs no re-serialisation of the whole set. A process crash loses no appended capture
(the next start re-adopts it), a power cut at most those of the last ``index_interval_s`` +
``[capture] write_interval_s`` (the recorder's batching); none is ever listed partial.

Removal: a capture evicted, expired or pulled is erased at once (record marked, payload
zeroed; a segment left without a live record is deleted, a standalone file unlinked); the
erasures are fsynced (one fsync per segment, one of the directory when files went) before
the next index write, the one without them. So no index ever drops a capture whose erasure
is not durable: after a crash or power cut a removed capture stays removed (an index still
listing an erased record or a deleted file drops it at start).

The disk budget bounds the files: every segment file counts with its whole size (live
records, their headers, erased records, the open segment), standalone files with theirs, the
index twice (snapshot and a journal as large), so a capture is admitted only when all of it
stays within ``disk_budget_bytes``. Segments are a 16th of the budget (at most 4 MiB,
:func:`.segfile.segment_bytes_for`); when erased records are what is in the way, the
remaining captures of the segments holding them go too (lowest priority and emptiest first,
never a rule of higher priority than the new capture's), deleting those segments. The slack
on top: a journal may reach 64 KiB before a new snapshot, and file-system block rounding.

At start, complete records (and standalone ``.npz`` files of older stores) the index
does not list are re-adopted from their own ``__meta__``, cut-off segment tails and temp
files are deleted, entries whose record is gone or erased are dropped, and a corrupt index
is rebuilt from the files.

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

from runtime.contracts.capture import segments as seg
from runtime.contracts.capture.fileformat import (
    INDEX, SUFFIX, Capture, CaptureFormatError, CaptureIndex, IndexEntry, decode, encode_with_meta, listed_files,
    read_entry, read_index,
)
from runtime.contracts.capture.rules import CaptureRule
from runtime.fsutil import fsync_dir

from ..logs import get_logger
from . import policy
from .indexfile import IndexWriter
from .segfile import SegmentSet, segment_bytes_for

log = get_logger("capture")

#: an index entry's JSON besides its meta and id (sha256, sizes, segment name, offset, keys), at most
_ENTRY_TEXT = 256


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
                 segment_bytes: int | None = None) -> None:
        """``segment_bytes``: None = :func:`.segfile.segment_bytes_for` the budget."""
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
        self._standalone_bytes = 0
        self._text_bytes = 0                                     # the entries' index JSON
        self._free: tuple[float, int] = (-1e9, 0)                # (when statvfs was read, free bytes)
        self._segments = SegmentSet(self.root, max_bytes=segment_bytes or segment_bytes_for(disk_budget_bytes))
        self._doomed: list[IndexEntry] = []  # removed from the entries, not erased yet (an erasure that failed)
        self._unlinked: set[Path] = set()   # directories a standalone file left since the last index write
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
        standalone = {e.path for e in listed.values() if e.segment is None}
        adopted += [e for e in (self._adopt(p) for p in sorted(listed_files(self.root) - standalone)) if e]
        self.counters.adopted += len(adopted)
        for e in sorted((*listed.values(), *adopted), key=lambda e: (e.meta.ts_ms, e.meta.id)):
            self._add(e)
        if len(self._entries) != len(index.entries) or self.counters.adopted:
            self._dirty = True
            self.flush_index(force=True)

    def _adopt(self, path: str) -> IndexEntry | None:
        p = self.root / path
        try:
            data = p.read_bytes()
            cap = decode(data, where=str(p))
        except (OSError, CaptureFormatError) as e:
            log.warning("capture.orphan_removed", path=str(p), error=str(e))
            p.unlink(missing_ok=True)
            return None
        return IndexEntry.of(path, data, cap.meta)

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
            # the policy budgets capture bytes: what else the files hold (headers, erased records, the
            # index) is taken off; the new capture costs its record and its index entry twice (snapshot, journal)
            cost = len(data) + seg.HEADER.size + 2 * (len(meta_text) + len(m.id) + _ENTRY_TEXT)
            budget = self.disk_budget_bytes - (self._disk_bytes() - self._total_bytes) - (cost - len(data))
            own = self._by_rule.get(m.rule, {})
            adm = policy.admit_in_rule(iter(own.values()), new, rule=rules.get(m.rule), own_count=len(own),
                                       own_bytes=self._rule_bytes[m.rule], total_bytes=self._total_bytes,
                                       disk_budget_bytes=budget)
            if adm is None:  # the disk budget: captures of other rules may make room
                adm = policy.admit(self._stored(), new, rules=rules, disk_budget_bytes=budget)
            extra = self._room(adm.evict, cost, m.rule, rules) if adm.accept else ()
            if extra is None:
                adm = policy.Admission(False, reason="disk_budget")
            if adm.accept and self.min_free_bytes > 0 and self._free_bytes() - len(data) < self.min_free_bytes:
                adm = policy.Admission(False, reason="disk_low")
            if not adm.accept:
                self.counters.refused[adm.reason] += 1
                return adm.reason
            self._remove((*adm.evict, *extra), why="evicted")
            segment, offset = self._segments.append(m.rule, data)
            # the path of a checked id, the name of a segment it made: no need to check them again
            entry = IndexEntry(f"{m.id}{SUFFIX}", hashlib.sha256(data).hexdigest(), len(data), m, segment, offset)
            self._add(entry, meta_text)
            self._added[m.id] = None
            self._free = (self._free[0], self._free[1] - len(data))
            self.counters.stored[m.rule] += 1
            self._dirty = True
        return None

    def _room(self, evict: tuple[str, ...], record: int, rule: str,
              rules: Mapping[str, CaptureRule]) -> list[str] | None:
        """With the lock held: the captures to evict besides ``evict`` so that a record of
        ``record`` bytes keeps the files within the disk budget (the rest of segments holding
        erased records, lowest priority and emptiest first, none of a higher priority than
        ``rule``'s); None when that is not enough."""
        files = self._disk_bytes() + record
        if not evict and files <= self.disk_budget_bytes:
            return []  # the common case: nothing evicted, room enough
        gone = set(evict)
        in_seg = Counter(self._entries[i].segment for i in gone)
        files -= sum(self._entries[i].bytes for i in gone if self._entries[i].segment is None)
        files -= 2 * sum(len(self._texts[i]) for i in gone)
        emptied = {s for s, n in in_seg.items() if s and n >= len(self._segments.live_offsets(s))}
        files -= sum(self._segments.size(s) for s in emptied)
        if files <= self.disk_budget_bytes:
            return []
        sizes = self._segments.dead()  # (a pass over the segments: only now)
        sizes.update((s, self._segments.size(s)) for s in in_seg if s)
        ids: dict[str, list[str]] = {}
        for e in self._entries.values():
            if e.segment in sizes and e.segment not in emptied and e.meta.id not in gone:
                ids.setdefault(e.segment, []).append(e.meta.id)
        top = policy.priority(rules, rule)

        def order(s: str) -> tuple:
            live = [self._entries[i] for i in ids[s]]
            return policy.priority(rules, live[0].meta.rule), sum(e.bytes for e in live) / max(1, sizes[s]), s

        extra: list[str] = []
        for s in sorted(ids, key=order):
            if files <= self.disk_budget_bytes:
                break
            if policy.priority(rules, self._entries[ids[s][0]].meta.rule) > top:
                continue
            extra += ids[s]
            files -= sizes[s] + 2 * sum(len(self._texts[i]) for i in ids[s])
        return extra if files <= self.disk_budget_bytes else None

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
        # with the lock held: the records it lists and the erasures of those it drops are made durable first
        self._erase(strict=True)
        self._segments.sync()
        for d in sorted(self._unlinked):
            fsync_dir(d)
        self._unlinked.clear()
        self._index.write(texts=lambda: [self._texts[i] for i in self._entries],
                          added=[self._texts[i] for i in self._added], removed=self._removed, segmented=True)
        self._added, self._removed = {}, []
        self._dirty = False

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
        """Delete captures the operator received and acknowledged (erased, then the index
        without them). Returns the ids that were here."""
        with self._lock:
            ids = [i for i in ids if i in self._entries]
            self._remove(ids, why="pulled")
            if ids:
                self._write_index()
            return ids

    def _remove(self, ids: Iterable[str], *, why: str) -> None:
        # with the lock held: erased at once, durable before the next index write (one without them)
        gone = [self._entries.pop(i) for i in list(ids) if i in self._entries]
        if not gone:
            return
        self._dirty = True
        for e in gone:
            self._text_bytes -= len(self._texts.pop(e.meta.id, ""))
            self._by_rule[e.meta.rule].pop(e.meta.id, None)
            self._rule_bytes[e.meta.rule] -= e.bytes
            self._total_bytes -= e.bytes
            if e.segment is None:
                self._standalone_bytes -= e.bytes
            if self._added.pop(e.meta.id, False) is False:  # listed by an index write: journal its removal
                self._removed.append(e.meta.id)
            if why == "evicted":
                self.counters.evicted[e.meta.rule] += 1
            elif why == "expired":
                self.counters.expired += 1
            else:
                self.counters.removed_after_pull += 1
        self._doomed += gone
        self._erase(strict=False)

    def _erase(self, *, strict: bool) -> None:
        # with the lock held: erase the doomed captures; an OSError is raised when ``strict``
        # (before an index write), else logged and retried then
        if not self._doomed:
            return
        try:
            self._segments.erase(e for e in self._doomed if e.segment)
            for e in self._doomed:
                if e.segment is None:
                    p = self.root / e.path
                    p.unlink(missing_ok=True)
                    self._unlinked.add(p.parent)
        except OSError as err:
            if strict:
                raise
            log.error("capture.erase_failed", captures=len(self._doomed), error=str(err))
            return
        self._doomed = []

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

    def read_stored(self, entry: IndexEntry) -> bytes | None:
        """:meth:`read`, or None when the capture was removed (evicted, expired) before the
        read finished: its bytes may be zeros or gone then, which says nothing of the file.
        Raises OSError (a capture still stored that cannot be read)."""
        try:
            data = read_entry(self.root, entry)
        except OSError:
            if self.entry(entry.meta.id) != entry:
                return None
            raise
        # removal takes the entry out before erasing it: still here after the read = read before any erasure
        return data if self.entry(entry.meta.id) == entry else None

    def usage(self) -> dict:
        """Captures and bytes held, in total and by rule (from the running totals: no scan, cheap
        enough for every ``/metrics`` scrape)."""
        with self._lock:
            return {"captures": len(self._entries), "bytes": self._total_bytes,
                    "bytes_by_rule": {r: n for r, n in self._rule_bytes.items() if n > 0},
                    "captures_by_rule": {r: len(c) for r, c in self._by_rule.items() if c},
                    "disk_bytes": self._disk_bytes(), "disk_budget_bytes": self.disk_budget_bytes}

    def close(self) -> None:
        self.flush_index(force=True)
        with self._lock:
            self._segments.close()
            self._index.close()

    # ------------------------------------------------------------ helpers
    def _stored(self) -> list[policy.Stored]:
        return [policy.Stored(e.meta.id, e.meta.rule, e.bytes, e.meta.ts_ms) for e in self._entries.values()]

    def _disk_bytes(self) -> int:
        # every segment's whole size, the standalone files, the index (snapshot and journal at most as large)
        return self._segments.disk_bytes() + self._standalone_bytes + 2 * self._text_bytes

    def _add(self, e: IndexEntry, meta_text: str | None = None) -> None:
        # with the lock held (or at start)
        m = e.meta
        self._entries[m.id] = e
        self._texts[m.id] = e.to_text(meta_text)
        self._text_bytes += len(self._texts[m.id])
        own = self._by_rule.setdefault(m.rule, {})
        last = next(reversed(own.values()), None)
        own[m.id] = policy.Stored(m.id, m.rule, e.bytes, m.ts_ms)
        if last is not None and m.ts_ms < last.ts_ms:  # older than the newest (a drift capture): keep ts order
            self._by_rule[m.rule] = dict(sorted(own.items(), key=lambda kv: kv[1].ts_ms))  # stable: ties as stored
        self._rule_bytes[m.rule] += e.bytes
        self._total_bytes += e.bytes
        if e.segment is None:
            self._standalone_bytes += e.bytes

    def _free_bytes(self) -> int:
        # statvfs at most every second; put() takes off what it wrote since
        now = time.monotonic()
        if now - self._free[0] >= 1.0:
            st = os.statvfs(self.root)
            self._free = (now, st.f_bavail * st.f_frsize)
        return self._free[1]
