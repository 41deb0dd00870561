"""The capture store's index on disk: ``index.json`` (a snapshot, replaced atomically) and the
journal it names (``index.<n>.journal``, schema edgeship.capture-set/2), to which each index
write appends the entries added and the ids removed since the last one, then fsyncs. So an
index write costs what changed, not the whole set; once the journal would outgrow the
snapshot (or 64 KiB) a new snapshot naming a new, empty journal replaces both (the old journal
is deleted after the rename). Readers apply the journal (fileformat.read_index); a line cut
off by a crash has no newline and is ignored.

Not thread-safe: the store calls it with its lock held.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from runtime.contracts.capture.fileformat import INDEX, index_bytes, journal_line
from runtime.fsutil import atomic_write_bytes, fsync_dir

#: a journal this small never triggers a new snapshot
JOURNAL_MIN_BYTES = 64 << 10
_NAME = re.compile(r"^index\.([0-9]{1,18})\.journal$")


class IndexWriter:
    def __init__(self, root: Path, *, journal: str | None) -> None:
        """``journal``: the one the index on disk names (None: none yet). Other journals left
        by a crash between a snapshot and the deletion of its predecessor are deleted."""
        self.root = root
        self._gen = int(_NAME.match(journal).group(1)) if journal else 0
        for p in root.glob("index.*.journal"):
            if p.name != journal:
                p.unlink(missing_ok=True)
        self._journal: str | None = None  # the first write is a snapshot (a journal read at start may end cut off)
        self._fd: int | None = None
        self._journal_bytes = 0
        self._snapshot_bytes = 0

    def write(self, *, texts: Callable[[], list[str]], added: list[str], removed: list[str], segmented: bool) -> None:
        """Record an index write: ``added`` entry texts and ``removed`` ids since the last one
        (``texts()``: every entry's text, for a snapshot). Raises OSError (nothing changes then
        for readers but a journal line they ignore or apply: the store retries)."""
        data = b"".join([journal_line(add=t) for t in added] + ([journal_line(remove=removed)] if removed else []))
        if self._journal is not None and self._journal_bytes + len(data) <= max(self._snapshot_bytes,
                                                                             JOURNAL_MIN_BYTES):
            if data:
                self._append(data)
            return
        old = self._journal
        self._gen += 1
        self._journal = None
        name = f"index.{self._gen}.journal"
        snapshot = index_bytes(texts(), segmented=segmented, journal=name)
        atomic_write_bytes(self.root / INDEX, snapshot, mode=0o600)
        self._close()
        if old is not None:
            (self.root / old).unlink(missing_ok=True)
        self._journal, self._journal_bytes, self._snapshot_bytes = name, 0, len(snapshot)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.root / self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fsync_dir(self.root)
        n = os.write(self._fd, data)
        self._journal_bytes += n
        if n != len(data):  # a short write (disk full): the cut-off line is ignored by readers
            name, self._journal = self._journal, None  # the next write makes a snapshot instead
            raise OSError(f"{name}: short write ({n} of {len(data)} bytes)")
        os.fsync(self._fd)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close()
