"""Per-model inference statistics since start, as Triton's statistics extension reports them.

Fed by :meth:`Agent.add_request_observer` (every inference that reached the model, ok or
not), so HTTP, gRPC and in-process callers are counted alike. Counts and nanoseconds are
cumulative (monotonic since the agent started). The agent times the engine call, so
``compute_infer`` and ``success`` carry the same duration and ``queue``/``compute_input``/
``compute_output`` stay 0; ``execution_count`` counts requests (with batching on, several
requests share one engine call, and the agent does not count the calls apart).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..store import ModelRef


@dataclass
class _Counters:
    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    last_inference_ms: int = 0


class ServingStats:
    """Thread-safe counters by model sha256. Use :meth:`observe` as a request observer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sha: dict[str, _Counters] = {}

    def observe(self, sha: str, ok: bool, latency_s: float) -> None:
        ns = int(latency_s * 1e9)
        with self._lock:
            c = self._by_sha.setdefault(sha, _Counters())
            if ok:
                c.success, c.success_ns = c.success + 1, c.success_ns + ns
            else:
                c.fail, c.fail_ns = c.fail + 1, c.fail_ns + ns
            c.last_inference_ms = int(time.time() * 1000)

    def model_stats(self, refs: Iterable[ModelRef]) -> list[dict[str, Any]]:
        """Triton's ``model_stats`` entries (JSON names; uint64 as numbers) for ``refs``."""
        out = []
        with self._lock:
            for ref in refs:
                c = self._by_sha.get(ref.sha256, _Counters())
                out.append({
                    "name": ref.name, "version": ref.version, "last_inference": c.last_inference_ms,
                    "inference_count": c.success, "execution_count": c.success,
                    "inference_stats": {
                        "success": {"count": c.success, "ns": c.success_ns},
                        "fail": {"count": c.fail, "ns": c.fail_ns},
                        "queue": {"count": c.success, "ns": 0},
                        "compute_input": {"count": c.success, "ns": 0},
                        "compute_infer": {"count": c.success, "ns": c.success_ns},
                        "compute_output": {"count": c.success, "ns": 0},
                        "cache_hit": {"count": 0, "ns": 0},
                        "cache_miss": {"count": 0, "ns": 0},
                    },
                    "batch_stats": [],
                })
        return out
