"""Optional batching: concurrent requests merged into one engine call (off by default).

One worker thread takes the first waiting request, then waits up to ``max_wait_s`` for
more, up to ``max_batch_size`` requests whose inputs fit together (same trailing shapes
and dtypes), concatenates them along the first axis, runs them on one leased session and
splits the outputs back. Only models whose every input and output has a dynamic first
dimension are batched; for others ``accepts`` is False and requests run directly.

A request with bad inputs fails alone (it is checked before it joins a batch); an engine
failure fails every request of that batch.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from runtime.errors import InputMismatchError
from runtime.spec import TensorSpec

from .errors import AgentError
from .metrics import Outcome

_STOP = object()


@dataclass(eq=False)
class _Pending:
    feeds: Mapping[str, np.ndarray]
    model: str | None
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    ref: Any = None
    error: BaseException | None = None

    def key(self) -> tuple:
        return tuple(sorted((k, np.asarray(v).dtype.str, np.asarray(v).shape[1:]) for k, v in self.feeds.items()))

    def rows(self) -> int:
        return int(np.asarray(next(iter(self.feeds.values()))).shape[0])


def batchable(inputs: tuple[TensorSpec, ...] | list[TensorSpec], outputs) -> bool:
    """True when every input and output has a dynamic (symbolic or unknown) first dimension."""
    return all(s.shape and not (isinstance(s.shape[0], int) and s.shape[0] >= 0) for s in (*inputs, *outputs))


class Batcher:
    """Merges requests for ``agent`` (an :class:`~.core.Agent`: it uses ``current``,
    ``acquire``/``release``, ``run_on`` and ``metrics``)."""

    def __init__(self, agent: Any, *, max_batch_size: int, max_wait_s: float) -> None:
        self.agent = agent
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._q: queue.Queue = queue.Queue()
        self._carry: list[_Pending] = []
        self._thread = threading.Thread(target=self._loop, name="edgeship-batcher", daemon=True)
        self._thread.start()

    def accepts(self, feeds: Mapping[str, np.ndarray]) -> bool:
        cur = self.agent.current()
        return cur is not None and batchable(cur.session.inputs, cur.session.outputs) and bool(feeds)

    def submit(self, feeds: Mapping[str, np.ndarray], model: str | None) -> tuple[dict, Any]:
        """Queue a request; block until its batch ran. Returns (outputs, ModelRef)."""
        p = _Pending(feeds={k: np.asarray(v) for k, v in feeds.items()}, model=model)
        self._q.put(p)
        p.done.wait()
        if p.error is not None:
            raise p.error
        return p.result, p.ref  # type: ignore[return-value]

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ worker
    def _loop(self) -> None:
        while True:
            first = self._carry.pop(0) if self._carry else self._q.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                left = deadline - time.perf_counter()
                try:
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._q.put(_STOP)
                    break
                (batch if nxt.key() == first.key() and nxt.model == first.model else self._carry).append(nxt)
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            lease = self.agent.acquire(batch[0].model)
        except AgentError as e:
            for p in batch:
                p.error = e
                p.done.set()
            return
        try:
            ok = []
            for p in batch:
                problem = _check(p.feeds, lease.session.inputs)
                if problem:
                    p.error = InputMismatchError(problem)
                    self.agent.metrics.record(lease.ref.sha256, Outcome.REJECTED)
                    p.done.set()
                else:
                    ok.append(p)
            if not ok:
                return
            names = list(ok[0].feeds)
            merged = {n: np.concatenate([p.feeds[n] for p in ok]) for n in names}
            try:
                out = self.agent.run_on(lease, lambda: lease.session.run(merged), requests=len(ok))
            except BaseException as e:
                for p in ok:
                    p.error = e
                    p.done.set()
                return
            start = 0
            for p in ok:
                n = p.rows()
                p.result, p.ref = {k: v[start:start + n] for k, v in out.items()}, lease.ref
                start += n
                p.done.set()
        finally:
            self.agent.release(lease)


def _check(feeds: Mapping[str, np.ndarray], specs) -> str | None:
    names = {s.name for s in specs}
    if set(feeds) != names:
        return f"expected inputs {sorted(names)}, got {sorted(feeds)}"
    for s in specs:
        a = feeds[s.name]
        if a.dtype != np.dtype(s.dtype):
            return f"input {s.name!r} must be {s.dtype}, got {a.dtype}"
        if not s.accepts_shape(a.shape):
            return f"input {s.name!r} has shape {list(a.shape)}, model expects {list(s.shape)}"
    return None
