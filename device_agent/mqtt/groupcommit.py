"""Group commit: many callers, one write per batch, nobody returns before their batch is written.

A caller stages its items under :attr:`GroupCommit.lock` and waits. Whichever waiting caller
finds no write running becomes the leader: it takes *everything* staged so far (its own items
and those of every caller that staged meanwhile), releases the lock, writes the batch, and
wakes the others. While one batch is written the next one accumulates, so under concurrency
the batch grows with the load, and a lone caller pays one write per call with no added delay
(nothing waits for company).

Order: batches are written one at a time in staging order, so items staged in some order under
the lock (e.g. with ids taken in the same hold) are written in that order.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


class _Staged(Generic[T]):
    __slots__ = ("item", "done", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Batches the items of concurrent callers into calls of ``write(items)``."""

    def __init__(self, write: Callable[[list[T]], None]) -> None:
        self.lock = threading.Condition(threading.Lock())
        self._write = write
        self._staged: list[_Staged[T]] = []
        self._writing = False
        self.batches = 0   # writes that succeeded
        self.items = 0     # items they held

    def commit(self, items: Sequence[T]) -> None:
        """Stage ``items`` and return once the write that holds them succeeded. Call with
        :attr:`lock` held; it is released while waiting and while writing.

        Raises:
            whatever ``write`` raised for the batch that held ``items`` (none of it written,
            if ``write`` is all or nothing).
        """
        if not items:
            return
        entries = [_Staged(i) for i in items]
        self._staged.extend(entries)
        last = entries[-1]
        while not last.done:
            if self._writing:
                self.lock.wait()
            else:
                self._lead()
        if last.error is not None:  # one batch holds all of a call's items
            raise last.error

    def _lead(self) -> None:
        batch, self._staged = self._staged, []
        self._writing = True
        self.lock.release()
        error: BaseException | None = None
        try:
            self._write([e.item for e in batch])
        except BaseException as e:  # handed to every caller of the batch, the leader included
            error = e
        finally:
            self.lock.acquire()
            self._writing = False
            if error is None:
                self.batches += 1
                self.items += len(batch)
            for e in batch:
                e.error, e.done = error, True
            self.lock.notify_all()
