"""Optional batching: concurrent requests merged into one engine call (off by default).

One worker thread takes the first waiting request, then waits up to ``max_wait_s`` for
more, up to ``max_batch_size`` requests whose inputs fit together (same trailing shapes
and dtypes, and the same values of every rank-0 input), concatenates them along the first
axis, runs them on one leased session and splits the outputs back. Rank-0 (scalar) inputs,
such as Silero VAD's int64 ``sr``, are passed once, as they are: they have no batch axis,
so requests whose scalars differ never share a call. Only models whose every non-scalar
input and every output has a dynamic first dimension (and that have at least one such
input) are batched; for others ``accepts`` is False and requests run directly.

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
        """Requests with equal keys can share one engine call: same dtypes, trailing shapes,
        and the same value of every scalar input (its bytes are in the key)."""
        return tuple(sorted((k, v.dtype.str, v.shape[1:]) if v.ndim else (k, v.dtype.str, (), v.tobytes())
                            for k, v in self.feeds.items()))

    def rows(self) -> int:
        return int(next(v for v in self.feeds.values() if v.ndim).shape[0])


def _dynamic_first(s: TensorSpec) -> bool:
    return bool(s.shape) and not (isinstance(s.shape[0], int) and s.shape[0] >= 0)


def batchable(inputs: tuple[TensorSpec, ...] | list[TensorSpec], outputs) -> bool:
    """True when every non-scalar input and every output has a dynamic (symbolic or unknown)
    first dimension, and at least one input is not a scalar (rank-0 inputs are left alone)."""
    tensors = [s for s in inputs if s.shape]
    return bool(tensors) and all(_dynamic_first(s) for s in (*tensors, *outputs))


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
        return (cur is not None and batchable(cur.session.inputs, cur.session.outputs) and bool(feeds)
                and any(np.ndim(v) for v in feeds.values()))

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
            first = ok[0].feeds
            merged = {n: np.concatenate([p.feeds[n] for p in ok]) if v.ndim else v for n, v in first.items()}
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
