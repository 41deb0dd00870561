"""The capture store's segment files (format: runtime.contracts.capture.segments): one open,
append-only segment per rule (captures of one rule are evicted, expire and are pulled
roughly oldest first, so a segment empties as a whole), rotated at ``max_bytes``.

Appending is one ``write`` to an ``O_APPEND`` descriptor, no fsync; :meth:`SegmentSet.sync`
fsyncs the segments written since the last call (and the directory when one was created)
and runs before every index write, so an index never lists a record that is not durable.
Removing a capture (after an index without it was written) marks its record erased and
overwrites its payload with zeros at once; a segment whose records are all gone is deleted.

Not thread-safe: the store calls it with its lock held.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.contracts.capture import segments as seg
from runtime.contracts.capture.fileformat import CaptureFormatError, IndexEntry, decode
from runtime.fsutil import fsync_dir

from ..logs import get_logger

log = get_logger("capture")

#: a segment takes no more appends past this size (a new one is opened)
SEGMENT_BYTES = 4 << 20
_ZEROS = bytes(64 << 10)


@dataclass
class _Open:
    name: str
    fd: int
    size: int


class SegmentSet:
    def __init__(self, root: Path, *, max_bytes: int = SEGMENT_BYTES) -> None:
        self.root, self.max_bytes = root, max_bytes
        self._open: dict[str, _Open] = {}    # rule -> the segment its captures are appended to
        self._live: dict[str, int] = {}      # segment -> records listed or about to be
        self._dirty: set[int] = set()        # descriptors written since the last sync
        self._new_file = False

    # ------------------------------------------------------------ writing
    def append(self, rule: str, payload: bytes) -> tuple[str, int]:
        """Append one capture to ``rule``'s segment. Returns ``(segment, payload offset)``.
        Raises OSError (nothing was appended then, or a cut-off record no index lists)."""
        cur = self._open.get(rule)
        if cur is None or cur.size >= self.max_bytes:
            if cur is not None:
                self._close(rule)
            cur = self._open[rule] = self._create()
        record = seg.frame(payload)
        n = os.write(cur.fd, record)
        if n != len(record):  # a short write (disk full): the record is cut off, never listed
            cur.size = os.fstat(cur.fd).st_size
            raise OSError(f"{cur.name}: short write ({n} of {len(record)} bytes)")
        offset = cur.size + seg.HEADER.size
        cur.size += n
        self._dirty.add(cur.fd)
        self._live[cur.name] = self._live.get(cur.name, 0) + 1
        return cur.name, offset

    def sync(self) -> None:
        """Make every appended record durable (before an index lists it)."""
        for fd in list(self._dirty):
            os.fsync(fd)
        self._dirty.clear()
        if self._new_file:
            fsync_dir(self.root)
            self._new_file = False

    def erase(self, entry: IndexEntry) -> None:
        """Remove one capture (no index lists it any more): its record is marked erased and
        zeroed; the segment goes when nothing in it is live."""
        name = entry.segment
        left = self._live.get(name, 0) - 1
        if left <= 0:
            self._live.pop(name, None)
            for rule, cur in list(self._open.items()):
                if cur.name == name:
                    self._close(rule)
            (self.root / name).unlink(missing_ok=True)
            return
        self._live[name] = left
        try:
            fd = os.open(self.root / name, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            os.pwrite(fd, seg.header(entry.bytes, erased=True), entry.offset - seg.HEADER.size)
            at, end = entry.offset, entry.offset + entry.bytes
            while at < end:
                at += os.pwrite(fd, _ZEROS[:min(len(_ZEROS), end - at)], at)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sync()
        for rule in list(self._open):
            self._close(rule)

    # ------------------------------------------------------------ start
    def recover(self, listed: dict[str, IndexEntry]) -> list[IndexEntry]:
        """At start: check the segments against the index entries ``listed`` (by id; those
        whose record is gone or cut off are removed from it), cut off partial tails, and
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
            try:
                with open(p, "r+b") as f:
                    size = os.fstat(f.fileno()).st_size
                    records, end = seg.scan(f, size)
                    at = {r.offset: r for r in records}
                    listed_here = {e.offset for e in by_seg.get(name, ())}
                    if end < size and all(o < end for o in listed_here):
                        f.truncate(end)  # a record cut short by the crash: never listed
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
            live = sum(1 for e in by_seg.get(name, ()) if e.meta.id in listed) + sum(
                1 for a in adopted if a.segment == name)
            if live:
                self._live[name] = live
            else:
                p.unlink(missing_ok=True)
        return adopted

    # ------------------------------------------------------------ helpers
    def _create(self) -> _Open:
        name = f"seg-{int(time.time() * 1000)}-{secrets.token_hex(4)}{seg.SEG_SUFFIX}"
        fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._new_file = True
        return _Open(name, fd, 0)

    def _close(self, rule: str) -> None:
        cur = self._open.pop(rule)
        if cur.fd in self._dirty:
            os.fsync(cur.fd)
            self._dirty.discard(cur.fd)
        os.close(cur.fd)
