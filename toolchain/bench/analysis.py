"""Derived figures (pure): speedup against the fp32 artifact on the same engine, the
recommendation (fastest artifact that passed its fidelity gate and fits the budget, per
device) and the notes that explain int8 results on this hardware.
"""

from __future__ import annotations

from typing import Any

from runtime.bench.fingerprint import describe_int8_hardware, int8_features

from .fidelity import Fidelity, common_metric, from_verification

INT8_PRECISIONS = ("int8", "int8-static", "int8-dynamic")


def p50(cell: dict[str, Any]) -> float | None:
    st = cell.get("stats") or {}
    return (st.get("percentiles_s") or {}).get("p50")


def _config(cell: dict[str, Any]) -> tuple:
    return (cell["engine"], cell["scenario"], cell["batch"], cell["threads"], cell["streams"], cell.get("pinned"))


def baseline_for(cell: dict[str, Any], cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fp32 artifact's cell on the same engine and configuration (same OV hint preferred)."""
    cands = [c for c in cells if c["precision"] == "fp32" and c.get("stats") and _config(c) == _config(cell)]
    same_hint = [c for c in cands if c.get("precision_hint") == cell.get("precision_hint")]
    pick = same_hint or cands
    return pick[0] if pick else None


def speedups(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """key -> {"speedup": fp32 p50 / cell p50, "baseline": key, "baseline_executed": ...}."""
    out = {}
    for c in cells:
        base = baseline_for(c, cells)
        if base is None or p50(c) is None or p50(base) is None:
            continue
        out[c["key"]] = {"speedup": p50(base) / p50(c), "baseline": base["key"],
                         "baseline_executed_precision": base.get("executed_precision")}
    return out


def fidelity_of(cell: dict[str, Any]) -> Fidelity | None:
    """The cell's fidelity (by its task's metric); for results written before fidelity was
    recorded, derived from the raw figures (a label accuracy drop means a classifier;
    otherwise the cosine: top-1 agreement is never taken for an accuracy figure)."""
    if cell.get("fidelity"):
        return Fidelity.from_json(cell["fidelity"])
    acc = cell.get("accuracy") or {}
    return from_verification(acc, task="classify" if acc.get("accuracy_drop_pts") is not None else None)


def gate_failed(cell: dict[str, Any]) -> bool:
    """Whether the artifact failed the build's fidelity/tolerance gate."""
    f = fidelity_of(cell)
    return bool(cell.get("gate_failed") or cell.get("artifact_status") == "gate_failed"
                or (f is not None and f.passed is False))


def recommend(cells: list[dict[str, Any]], *, max_drop_pts: float | None, device_name: str) -> dict[str, Any]:
    """Fastest single-stream batch-1 artifact within the budget, overall and per thread count.

    Never ranks an artifact that failed the build's gate. ``max_drop_pts`` bounds the accuracy
    points a classifier loses (label accuracy drop, or top-1 disagreement without labels);
    other tasks are judged by their own metric's gate in the build. With a budget set, an
    artifact without any fidelity figure is not ranked.
    """
    excluded, cands = [], []
    for c in cells:
        if c["scenario"] != "single_stream" or c["status"] == "error" or p50(c) is None:
            continue
        f = fidelity_of(c)
        if gate_failed(c):
            excluded.append({"key": c["key"], "reason": "failed the build's fidelity gate"
                             + (f" ({f.text()}" + (f", budget {f.budget:g})" if f.budget is not None else ")")
                                if f else "")})
        elif max_drop_pts is not None and f is None:
            excluded.append({"key": c["key"], "reason": "no fidelity figure for this artifact"})
        elif max_drop_pts is not None and f.drop_pts is not None and f.drop_pts > max_drop_pts:
            what = "accuracy drop" if f.metric.value == "accuracy_drop_pts" else "top-1 disagreement with fp32"
            excluded.append({"key": c["key"], "reason": f"{what} {f.drop_pts:.2f} pts > budget {max_drop_pts} pts"})
        else:
            cands.append(c)

    def pick(cs):
        if not cs:
            return None
        best = min(cs, key=lambda c: (p50(c), c["key"]))
        f = fidelity_of(best)
        return {"key": best["key"], "artifact_id": best["artifact_id"], "engine": best["engine"],
                "precision": best["precision"], "executed_precision": best.get("executed_precision"),
                "threads": best["threads"], "precision_hint": best.get("precision_hint"),
                "p50_s": p50(best), "p90_s": (best["stats"]["percentiles_s"] or {}).get("p90"),
                "fidelity": f.to_json() if f else None, "accuracy_drop_pts": f.drop_pts if f else None,
                "size_bytes": best.get("size_bytes")}

    by_threads = {}
    for th in sorted({c["threads"] for c in cands}):
        by_threads[str(th)] = pick([c for c in cands if c["threads"] == th])
    metric = common_metric([fidelity_of(c) for c in cells])
    return {"device": device_name, "scenario": "single_stream, batch 1", "max_accuracy_drop_pts": max_drop_pts,
            "metric": metric.value if metric else None,
            "budget_applies": metric is not None and metric.value in ("accuracy_drop_pts", "top1_agreement"),
            "best": pick(cands), "by_threads": by_threads, "excluded": excluded}


def int8_notes(cells: list[dict[str, Any]], sp: dict[str, dict[str, Any]], env: dict[str, Any]) -> list[str]:
    """Say where int8 is not faster than fp32 on an engine, and why that can happen."""
    feats = int8_features(env)
    notes = [describe_int8_hardware(env)]
    bf16 = sorted({c["artifact_id"] for c in cells if c["engine"] == "openvino"
                   and c.get("executed_precision") == "bf16"})
    if bf16:
        notes.append("OpenVINO executed " + ", ".join(bf16) + " in bf16 on this CPU (its default without a "
                     "precision hint, --ov-precision auto); the agent serves float IR pinned to f32 (--ov-precision deploy).")
    slow = [(c, sp[c["key"]]["speedup"]) for c in cells
            if c["precision"] in INT8_PRECISIONS and c["key"] in sp and sp[c["key"]]["speedup"] < 1.05]
    for c, s in sorted(slow, key=lambda x: x[0]["key"]):
        why = []
        if not (feats["vnni"] or feats["amx"] or feats["arm_dotprod"]):
            why.append("this CPU has no int8 dot-product instructions (VNNI/AMX/dotprod)")
        why.append("quantized ops the engine cannot fuse run as QuantizeLinear/DequantizeLinear around "
                   "float kernels, adding conversion overhead")
        if c["precision"] == "int8-dynamic":
            why.append("dynamic quantization computes activation scales at run time and mostly speeds up "
                       "MatMul/Gemm, not convolutions")
        why.append("small or depthwise/memory-bound layers gain little from int8 arithmetic")
        base_p50 = next((p50(b) for b in cells if b["key"] == sp[c["key"]]["baseline"]), None)
        if base_p50 is not None and base_p50 < 2e-4:
            why.append(f"the model is so small (fp32 p50 {base_p50 * 1e6:.0f} us) that fixed per-call overhead "
                       "(Python, input checks, output copies) dominates")
        if c["engine"] == "openvino" and (baseline_executed := sp[c["key"]].get("baseline_executed_precision")) == "bf16":
            why.append("the fp32 baseline already runs in bf16 on this CPU")
        notes.append(f"int8 is not faster than fp32 for {c['artifact_id']} ({c['engine']}, batch {c['batch']}, "
                     f"{c['threads']} threads): {s:.2f}x. Why this can happen: " + "; ".join(why) + ".")
    return notes


def load_notes(cells: list[dict[str, Any]], env: dict[str, Any]) -> list[str]:
    """Warn when other work was running: figures measured on a busy machine are noisy."""
    cpus = env.get("logical_cpus") or 1
    loads = [t["load_avg_before"][0] for c in cells for t in c.get("trials", [])
             if t.get("load_avg_before")]
    if env.get("load_avg"):
        loads.append(env["load_avg"][0])
    if not loads or max(loads) <= 0.5 * cpus:
        return []
    return [f"The machine was busy while measuring (1-minute load average up to {max(loads):.1f} on {cpus} "
            "logical CPUs): other processes competed for the cores, so latencies are noisier and multi-thread "
            "figures suffer most. Re-run on an idle machine for publishable numbers; compare trial_p50_s and "
            "CV to judge the spread."]


def analyze(cells: list[dict[str, Any]], env: dict[str, Any], *, max_drop_pts: float | None) -> dict[str, Any]:
    sp = speedups(cells)
    device = f"CPU ({env.get('cpu_model') or 'unknown'})"
    return {"speedups": sp, "recommendation": recommend(cells, max_drop_pts=max_drop_pts, device_name=device),
            "notes": int8_notes(cells, sp, env) + load_notes(cells, env)}
