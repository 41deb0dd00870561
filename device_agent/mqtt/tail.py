"""The newest committed rows of the durable queue, kept in memory so the sender publishes a
batch straight after its commit instead of reading it back from SQLite.

Not a source of truth: the disk is. The tail is *valid* only while it holds every committed
row with ``msg_id > after`` that has not been taken yet; anything that could break that (it
overflowed while the broker was away, the budget dropped rows, a write failed) invalidates
it, and the reader goes back to the disk until it has caught up (``restart``). Not thread
safe on its own: the queue calls it under its database lock, the same lock its commits hold.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Iterable, Protocol, TypeVar


class Row(Protocol):
    """What the tail needs of a queued message (queue.QueuedMessage has it)."""

    @property
    def msg_id(self) -> int: ...

    @property
    def size(self) -> int: ...


R = TypeVar("R", bound=Row)


class CommittedTail(Generic[R]):
    """Bounded FIFO of committed rows in id order (``max_rows`` rows, ``max_bytes`` payload)."""

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._rows: deque[R] = deque()
        self._bytes = 0
        self._valid = False   # a new queue has rows on disk that the tail never saw
        self._after = 0

    @property
    def valid(self) -> bool:
        return self._valid

    def invalidate(self) -> None:
        self._rows.clear()
        self._bytes = 0
        self._valid = False

    def restart(self, *, after_id: int) -> None:
        """The reader has every committed row up to ``after_id``: track the commits from here."""
        self.invalidate()
        self._valid = True
        self._after = after_id

    def extend(self, rows: Iterable[R]) -> None:
        """Rows of a commit, in id order; past the bounds the tail gives up (the disk has them)."""
        if not self._valid:
            return
        rows = list(rows)
        size = sum(m.size for m in rows)
        if len(self._rows) + len(rows) > self.max_rows or self._bytes + size > self.max_bytes:
            self.invalidate()
            return
        self._rows.extend(rows)
        self._bytes += size

    def take(self, *, after_id: int, limit: int) -> list[R] | None:
        """Up to ``limit`` rows with ``msg_id > after_id``, oldest first, removed from the tail;
        None when the tail cannot answer (invalid, or ``after_id`` is before what it covers)."""
        if not self._valid or after_id < self._after:
            return None
        rows = self._rows
        while rows and rows[0].msg_id <= after_id:
            self._bytes -= rows.popleft().size
        out = []
        while rows and len(out) < limit:
            m = rows.popleft()
            self._bytes -= m.size
            out.append(m)
        self._after = out[-1].msg_id if out else after_id
        return out
