"""The sender's window on the durable queue: a bounded run of committed rows in id order,
fed by the commits themselves (so a batch is published straight after its commit, without
reading it back) and, when it falls behind, by read-ahead from disk in large chunks.

Not a source of truth: the disk is. The window holds every committed row with
``after < msg_id <= upto`` that has not been taken yet; when it is *current* it also follows
the commits (``upto`` is the newest committed id). A commit that does not fit stops it
following (the rows are on disk; the reader reads ahead when the window runs dry), and
anything that could make it lie (the budget dropped rows, a write failed) clears it.

Not thread safe on its own: the queue calls it under its database lock, the same lock its
commits hold, so a read-ahead from disk and a commit never interleave.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Iterable, Protocol, TypeVar


class Row(Protocol):
    """What the window needs of a queued message (queue.QueuedMessage has it)."""

    @property
    def msg_id(self) -> int: ...

    @property
    def size(self) -> int: ...


R = TypeVar("R", bound=Row)


class CommittedTail(Generic[R]):
    """Bounded FIFO of committed rows (``max_rows`` rows, ``max_bytes`` payload)."""

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._rows: deque[R] = deque()
        self._bytes = 0
        self._after = 0          # every committed row > _after and <= the last held is held
        self._known = False      # False: nothing is known (a new queue, or cleared)
        self._current = False    # True: also every committed row after the last held

    @property
    def current(self) -> bool:
        return self._known and self._current

    def clear(self) -> None:
        self._rows.clear()
        self._bytes = 0
        self._known = self._current = False

    def load(self, *, after_id: int, rows: list[R], complete: bool) -> None:
        """Replace the window with ``rows``: the committed rows with id > ``after_id``, in order,
        read from disk; ``complete`` when that read returned every such row."""
        self.clear()
        self._after = after_id
        self._known, self._current = True, complete
        self._rows.extend(rows)
        self._bytes = sum(m.size for m in rows)

    def extend(self, rows: Iterable[R]) -> None:
        """Rows of a commit, in id order: kept while current and within the bounds."""
        if not self.current:
            return
        rows = list(rows)
        size = sum(m.size for m in rows)
        if len(self._rows) + len(rows) > self.max_rows or self._bytes + size > self.max_bytes:
            self._current = False  # these and later rows are read from disk when needed
            return
        self._rows.extend(rows)
        self._bytes += size

    def take(self, *, after_id: int, limit: int) -> list[R] | None:
        """Up to ``limit`` rows with ``msg_id > after_id``, oldest first, removed from the
        window; None when it cannot answer (nothing known, ``after_id`` before its start, or
        it ran dry while rows after it are on disk only)."""
        if not self._known or after_id < self._after:
            return None
        rows = self._rows
        while rows and rows[0].msg_id <= after_id:
            self._bytes -= rows.popleft().size
        if not rows and not self._current:
            return None
        out = []
        while rows and len(out) < limit:
            m = rows.popleft()
            self._bytes -= m.size
            out.append(m)
        self._after = out[-1].msg_id if out else max(self._after, after_id)
        return out

    def unread(self, rows: list[R], *, after_id: int) -> None:
        """Put back the newest rows :meth:`take` returned, unused (``after_id``: the last row
        the reader did use). Ignored when the window was cleared since."""
        if not self._known or not rows or after_id > self._after:
            return
        self._rows.extendleft(reversed(rows))
        self._bytes += sum(m.size for m in rows)
        self._after = after_id
