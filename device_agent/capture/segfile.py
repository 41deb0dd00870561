"""The capture store's segment files (format: runtime.contracts.capture.segments): one open,
append-only segment per rule (captures of one rule are evicted, expire and are pulled
roughly oldest first, so a segment empties as a whole), rotated at ``max_bytes``.

Appending is one ``write`` to an ``O_APPEND`` descriptor, no fsync; a write that fails or
comes back short (disk full) is cut off again (``ftruncate`` to the old size; if even that
fails the segment takes no more appends), so no later record lands behind a partial one.
:meth:`SegmentSet.sync` fsyncs the segments written since the last call (appends and
erasures) and the directory when a segment was created or deleted; it runs before every
index write, so an index never lists a record that is not durable and never drops one whose
erasure is not. Removing a capture marks its record erased and overwrites its payload with
zeros at once (made durable by the next sync, before the index without it); a segment whose
records are all gone is deleted at once. The set knows each segment's size and live bytes
(:meth:`disk_bytes`, :meth:`dead`), so the store can count erased records against its budget.

Not thread-safe: the store calls it with its lock held.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from runtime.contracts.capture import segments as seg
from runtime.contracts.capture.fileformat import CaptureFormatError, IndexEntry, decode
from runtime.fsutil import fsync_dir

from ..logs import get_logger

log = get_logger("capture")

#: a segment takes no more appends past this size (a new one is opened); the store uses less
#: for small disk budgets (:func:`segment_bytes_for`)
SEGMENT_BYTES = 4 << 20
_ZEROS = bytes(64 << 10)


def segment_bytes_for(disk_budget_bytes: int) -> int:
    """The segment size for a disk budget: a 16th of it (erased records of a partly emptied
    segment are a small share of the budget), between 4 KiB and :data:`SEGMENT_BYTES`."""
    return max(4096, min(SEGMENT_BYTES, disk_budget_bytes // 16))


@dataclass
class _Open:
    name: str
    fd: int
    size: int


class SegmentSet:
    def __init__(self, root: Path, *, max_bytes: int = SEGMENT_BYTES) -> None:
        self.root, self.max_bytes = root, max_bytes
        self._open: dict[str, _Open] = {}       # rule -> the segment its captures are appended to
        self._live: dict[str, dict[int, int]] = {}  # segment -> {payload offset: bytes} of its live records
        self._size: dict[str, int] = {}         # segment -> its file size
        self._dirty: set[int] = set()           # descriptors appended to since the last sync
        self._erased: set[str] = set()          # segments erased in since the last sync
        self._dir_dirty = False                 # a segment was created or deleted since the last sync

    # ------------------------------------------------------------ writing
    def append(self, rule: str, payload: bytes) -> tuple[str, int]:
        """Append one capture to ``rule``'s segment. Returns ``(segment, payload offset)``.
        Raises OSError (nothing was appended then)."""
        cur = self._open.get(rule)
        if cur is None or cur.size >= self.max_bytes:
            if cur is not None:
                self._close(rule)
            cur = self._open[rule] = self._create()
            self._live[cur.name], self._size[cur.name] = {}, 0
        record = seg.frame(payload)
        try:
            n = os.write(cur.fd, record)
            if n != len(record):
                raise OSError(f"{cur.name}: short write ({n} of {len(record)} bytes)")
        except OSError:
            self._cut(rule, cur)
            raise
        offset = cur.size + seg.HEADER.size
        cur.size += n
        self._size[cur.name] = cur.size
        self._dirty.add(cur.fd)
        self._live[cur.name][offset] = len(payload)
        return cur.name, offset

    def sync(self) -> None:
        """Make every append and erasure durable (before an index lists or drops them)."""
        for fd in list(self._dirty):
            os.fsync(fd)
        self._dirty.clear()
        for name in sorted(self._erased):
            try:
                fd = os.open(self.root / name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._erased.clear()
        if self._dir_dirty:
            fsync_dir(self.root)
            self._dir_dirty = False

    def erase(self, entries: Iterable[IndexEntry]) -> None:
        """Remove captures (the index will drop them once :meth:`sync` made this durable):
        each record is marked erased and zeroed; a segment left without a live record is
        deleted. Idempotent (a retry after an OSError redoes what is left)."""
        by_seg: dict[str, list[IndexEntry]] = {}
        for e in entries:
            by_seg.setdefault(e.segment, []).append(e)
        for name, es in by_seg.items():
            live = self._live.get(name)
            if live is None:
                continue
            for e in es:
                live.pop(e.offset, None)
            if not live:
                self.delete(name)
                continue
            try:
                fd = os.open(self.root / name, os.O_WRONLY)  # not the O_APPEND one: pwrite would append
            except FileNotFoundError:  # deleted by hand: nothing left to erase
                self.delete(name)
                continue
            try:
                for e in es:
                    os.pwrite(fd, seg.header(e.bytes, erased=True), e.offset - seg.HEADER.size)
                    at, end = e.offset, e.offset + e.bytes
                    while at < end:
                        at += os.pwrite(fd, _ZEROS[:min(len(_ZEROS), end - at)], at)
            finally:
                os.close(fd)
            self._erased.add(name)

    def delete(self, name: str) -> None:
        """Delete one segment (nothing in it is live)."""
        for rule, cur in list(self._open.items()):
            if cur.name == name:
                self._dirty.discard(cur.fd)
                self._close(rule)
        (self.root / name).unlink(missing_ok=True)
        self._live.pop(name, None)
        self._size.pop(name, None)
        self._erased.discard(name)
        self._dir_dirty = True

    def close(self) -> None:
        self.sync()
        for rule in list(self._open):
            self._close(rule)

    # ------------------------------------------------------------ accounting
    def disk_bytes(self) -> int:
        """The size of every segment file (live and erased records, headers)."""
        return sum(self._size.values())

    def dead(self) -> dict[str, int]:
        """``{segment: file size}`` of the segments holding erased records or cut-off bytes (a
        live record takes its payload and a header). A pass over every live record."""
        return {name: size for name, size in self._size.items()
                if size > sum(self._live.get(name, {}).values()) + seg.HEADER.size * len(self._live.get(name, {}))}

    def live_offsets(self, name: str) -> list[int]:
        return list(self._live.get(name, {}))

    def size(self, name: str) -> int:
        return self._size.get(name, 0)

    # ------------------------------------------------------------ start
    def recover(self, listed: dict[str, IndexEntry]) -> list[IndexEntry]:
        """At start: check the segments against the index entries ``listed`` (by id; those
        whose record is gone, erased or cut off are removed from it), cut off partial tails, and
        return the complete, unerased records no entry lists (a crash before their index
        write), to be adopted. Segments left without a live record are deleted."""
        by_seg: dict[str, list[IndexEntry]] = {}
        for e in listed.values():
            if e.segment:
                by_seg.setdefault(e.segment, []).append(e)
        adopted: list[IndexEntry] = []
        names = {p.name for p in self.root.glob(f"*{seg.SEG_SUFFIX}") if seg.is_segment_name(p.name)}
        for name in sorted(names | set(by_seg)):
            p = self.root / name
            size = 0
            try:
                with open(p, "r+b") as f:
                    size = os.fstat(f.fileno()).st_size
                    records, end = seg.scan(f, size)
                    at = {r.offset: r for r in records}
                    listed_here = {e.offset for e in by_seg.get(name, ())}
                    if end < size and all(o < end for o in listed_here):
                        f.truncate(end)  # a record cut short by the crash: never listed
                        size = end
                    for r in records:
                        if r.erased or r.offset in listed_here:
                            continue
                        f.seek(r.offset)
                        data = f.read(r.length)
                        try:
                            cap = decode(data, where=f"{p}@{r.offset}")
                            adopted.append(IndexEntry.of(f"{cap.meta.id}.npz", data, cap.meta, segment=name,
                                                         offset=r.offset))
                        except CaptureFormatError as e:
                            log.warning("capture.orphan_record_skipped", path=str(p), offset=r.offset, error=str(e))
            except FileNotFoundError:
                records, at = [], {}
            for e in by_seg.get(name, ()):
                r = at.get(e.offset)
                if r is None or r.erased or r.length != e.bytes:
                    listed.pop(e.meta.id, None)
            live = {e.offset: e.bytes for e in by_seg.get(name, ()) if e.meta.id in listed}
            live.update((a.offset, a.bytes) for a in adopted if a.segment == name)
            if live:
                self._live[name], self._size[name] = live, size
            else:
                p.unlink(missing_ok=True)
        return adopted

    # ------------------------------------------------------------ helpers
    def _create(self) -> _Open:
        name = f"seg-{int(time.time() * 1000)}-{secrets.token_hex(4)}{seg.SEG_SUFFIX}"
        fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._dir_dirty = True
        return _Open(name, fd, 0)

    def _cut(self, rule: str, cur: _Open) -> None:
        # a failed or short append: back to the size before it, or no more appends to this segment
        try:
            os.ftruncate(cur.fd, cur.size)
        except OSError as e:
            log.error("capture.segment_cut_failed", segment=cur.name, error=str(e))
            self._size[cur.name] = os.fstat(cur.fd).st_size
            self._close(rule)

    def _close(self, rule: str) -> None:
        cur = self._open.pop(rule)
        if cur.fd in self._dirty:
            os.fsync(cur.fd)
            self._dirty.discard(cur.fd)
        os.close(cur.fd)
