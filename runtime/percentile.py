"""The one percentile definition of edgeship (numpy + stdlib).

``percentile(samples, q)`` is numpy's default, *linear* interpolation between order
statistics (Hyndman & Fan type 7), so anyone can recompute a figure from raw samples with
``np.percentile``. The latency benchmark (``runtime.bench.stats``), the agent's request
window (``edgeship-agent status``, MQTT metrics, the update trial window) and the
Prometheus exporter that reads that window all use it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def percentile(samples: Iterable[float] | np.ndarray, q: float) -> float | None:
    """Percentile ``q`` (0-100) of ``samples``, or None when there are none.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    a = np.asarray(samples if isinstance(samples, np.ndarray) else list(samples), dtype=np.float64)
    return float(np.percentile(a, q)) if a.size else None
