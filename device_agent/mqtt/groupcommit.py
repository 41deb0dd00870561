"""Group commit: many callers, one write per batch, and a clear answer to "is it written yet".

Items are *staged* under :attr:`GroupCommit.lock`, in order, and written in that order, one
batch at a time, by whoever leads: a caller of :meth:`commit` or :meth:`flush` that finds no
write running takes *everything* staged so far (its own items and everyone else's), releases
the lock, writes the batch and wakes the others. So:

- :meth:`commit` returns once the write holding its items succeeded (a lone caller pays one
  write per call with no added delay; concurrent callers share writes);
- :meth:`stage` returns at once (the items are accepted, not written); they are written by the
  next leader, and :meth:`stage` leads itself once ``max_staged`` items are waiting, so the
  staging area is bounded;
- :meth:`flush` writes what is staged and returns once everything staged before the call is
  written.

Every method must be called with :attr:`lock` held; it is released while waiting and writing.
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
    """Batches staged items into calls of ``write(items)`` (all or nothing per call)."""

    def __init__(self, write: Callable[[list[T]], None], *, max_staged: int = 1024) -> None:
        self.lock = threading.Condition(threading.Lock())
        self.max_staged = max_staged
        self._write = write
        self._staged: list[_Staged[T]] = []
        self._writing: _Staged[T] | None = None   # last item of the batch being written
        self.batches = 0        # writes that succeeded
        self.items = 0          # items they held
        self.failed_items = 0   # items of writes that failed (never written)

    def commit(self, items: Sequence[T]) -> None:
        """Stage ``items`` and return once the write that holds them succeeded.

        Raises:
            whatever ``write`` raised for the batch that held ``items`` (none of it written).
        """
        if items:
            entries = [_Staged(i) for i in items]
            self._staged.extend(entries)
            self._wait(entries[-1])

    def stage(self, items: Sequence[T]) -> None:
        """Stage ``items`` for the next write and return; writes them now (and waits) when
        ``max_staged`` items are waiting.

        Raises:
            whatever ``write`` raised, when this call had to write the batch.
        """
        self._staged.extend(_Staged(i) for i in items)
        if len(self._staged) >= self.max_staged:
            self._wait(self._staged[-1])

    def flush(self) -> None:
        """Write everything staged; return once every item staged before the call is written.

        Raises:
            whatever ``write`` raised for the batch holding the newest of those items (earlier
            failed batches are counted in :attr:`failed_items`).
        """
        last = self._staged[-1] if self._staged else self._writing
        if last is not None:
            self._wait(last)

    @property
    def staged(self) -> int:
        """Items accepted and not yet handed to a write."""
        return len(self._staged)

    def _wait(self, last: _Staged[T]) -> None:
        while not last.done:
            if self._writing is not None:
                self.lock.wait()
            else:
                self._lead()
        if last.error is not None:  # a call's items are staged together: one batch holds them
            raise last.error

    def _lead(self) -> None:
        batch, self._staged = self._staged, []
        self._writing = batch[-1]
        self.lock.release()
        error: BaseException | None = None
        try:
            self._write([e.item for e in batch])
        except BaseException as e:  # handed to every caller of the batch, the leader included
            error = e
        finally:
            self.lock.acquire()
            self._writing = None
            if error is None:
                self.batches += 1
                self.items += len(batch)
            else:
                self.failed_items += len(batch)
            for e in batch:
                e.error, e.done = error, True
            self.lock.notify_all()
