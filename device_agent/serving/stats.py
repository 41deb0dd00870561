"""Per-model inference statistics since start, as Triton's statistics extension reports them.

Read from the agent's one request window (:meth:`RequestWindow.totals` of
:attr:`Agent.metrics`), the same per-model totals ``/metrics`` serves, so the two agree: every
inference that reached the model, ok or not (rejected requests, which never ran, are not
counted here), from HTTP, gRPC and in-process callers alike. Counts and nanoseconds are
cumulative (monotonic since the agent started; a model is dropped with its totals when more
than ``MAX_MODELS`` were served, as on ``/metrics``). The agent times the engine call, so
``compute_infer`` and ``success`` carry the same duration and ``queue``/``compute_input``/
``compute_output`` stay 0; ``execution_count`` counts requests (with batching on, several
requests share one engine call, and the agent does not count the calls apart).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..agent.metrics import ModelTotals, Outcome
from ..store import ModelRef


def model_stats(totals: Mapping[str, ModelTotals], refs: Iterable[ModelRef]) -> list[dict[str, Any]]:
    """Triton's ``model_stats`` entries (JSON names; uint64 as numbers) for ``refs``, from the
    agent window's ``totals`` (its clock is wall time: ``last_inference`` in ms since the epoch)."""
    out = []
    for ref in refs:
        t = totals.get(ref.sha256)
        ok, fail = (t.counts[Outcome.OK], t.counts[Outcome.ERROR]) if t else (0, 0)
        ok_ns, fail_ns = (t.latency_ns[Outcome.OK], t.latency_ns[Outcome.ERROR]) if t else (0, 0)
        out.append({
            "name": ref.name, "version": ref.version, "last_inference": int(t.last_ts * 1000) if t else 0,
            "inference_count": ok, "execution_count": ok,
            "inference_stats": {
                "success": {"count": ok, "ns": ok_ns},
                "fail": {"count": fail, "ns": fail_ns},
                "queue": {"count": ok, "ns": 0},
                "compute_input": {"count": ok, "ns": 0},
                "compute_infer": {"count": ok, "ns": ok_ns},
                "compute_output": {"count": ok, "ns": 0},
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [],
        })
    return out
