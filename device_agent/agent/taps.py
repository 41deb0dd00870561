"""The agent's tensor observers: who sees each successful call's inputs and outputs, and how
often (the drift monitor; :class:`~device_agent.agent.core.Agent` mixes this in).

``tap_tensors`` runs on the request's thread after every successful inference while an
observer is registered: it counts down and hands one call in ``set_tensor_sampling`` to the
observers (an observer that raises is logged, never raised to the request).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..logs import get_logger

log = get_logger("agent")

TensorObserver = Callable[[str, Mapping[str, np.ndarray], Mapping[str, np.ndarray]], None]


class TensorTaps:
    """Tensor observers and their sampling (the count-down is racy across request threads: a
    count, not an id)."""

    def __init__(self) -> None:
        self._tensor_observers: list[TensorObserver] = []
        self._tensor_every = self._tensor_countdown = 1  # see set_tensor_sampling

    def add_tensor_observer(self, fn: TensorObserver) -> None:
        """Call ``fn(model_sha, feeds, outputs)`` after every successful inference, or one in
        :meth:`set_tensor_sampling` (keep it cheap: it runs on the request's thread)."""
        self._tensor_observers.append(fn)

    def remove_tensor_observer(self, fn: TensorObserver) -> None:
        self._tensor_observers.remove(fn)

    def tap_tensors(self, sha: str, feeds: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> None:
        """One successful call for the tensor observers: one in :meth:`set_tensor_sampling` reaches
        them, the others only count down (what every request pays while an observer is registered)."""
        n = self._tensor_countdown - 1
        if n > 0:
            self._tensor_countdown = n
            return
        self._tensor_countdown = self._tensor_every
        call_observers(self._tensor_observers, sha, feeds, out)

    def set_tensor_sampling(self, every: int) -> None:
        """Hand one successful call in ``every`` to the tensor observers (1: every call; the drift
        monitor sets it from ``[drift] sample_every_requests`` and its cost budget)."""
        if every < 1:
            raise ValueError(f"tensor sampling must be >= 1, got {every}")
        self._tensor_every = every
        self._tensor_countdown = min(self._tensor_countdown, every)


def call_observers(fns: Iterable[Callable[..., Any]], *args: Any) -> None:
    """``fn(*args)`` for each of ``fns`` (a copy of the list): an observer that raises is logged,
    never raised to the request (the agent's request observers and its tensor observers)."""
    for fn in list(fns):
        try:
            fn(*args)
        except Exception as e:
            log.error("observer.failed", observer=getattr(fn, "__qualname__", repr(fn)), error=str(e))
