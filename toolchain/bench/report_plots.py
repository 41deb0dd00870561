"""The report's plots as base64 PNG (matplotlib, imported lazily with the Agg backend).

Latency distribution per target (empirical CDF of the raw samples, single stream), speedup
against fp32 per engine, and the Pareto view (p90 latency vs the fidelity metric of the
model's task, marker area = size on disk; markers numbered, a key beside the plot names
them, only the Pareto front is labelled in place). An artifact that failed its build's
fidelity gate is drawn as such in every plot (grey, dotted / hatched / an x, "GATE FAILED")
and is never on the Pareto front.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from .analysis import fidelity_of, gate_failed
from .fidelity import LABELS, common_metric
from .report_model import label

FAILED_COLOR = "#888888"

_COLORS = {"onnxruntime": "#1f77b4", "openvino": "#d62728", "tflite": "#2ca02c"}


def _png(fig) -> str:
    bio = io.BytesIO()
    fig.savefig(bio, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(bio.getvalue()).decode("ascii")


def _samples(cell: dict[str, Any]) -> np.ndarray | None:
    parts = []
    for p in cell.get("samples_files") or []:
        try:
            parts.append(np.load(p, allow_pickle=False))
        except (OSError, ValueError):
            return None
    return np.concatenate(parts) if parts else None


def plot_distribution(result: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    cells = [c for c in result["cells"] if c["scenario"] == "single_stream" and c["status"] != "error"]
    threads = sorted({c["threads"] for c in cells})
    if not cells:
        return None
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.2), squeeze=False)
    for ax, th in zip(axes[0], threads):
        for c in sorted((c for c in cells if c["threads"] == th), key=lambda c: c["key"]):
            s = _samples(c)
            if s is None:
                continue
            s = np.sort(s) * 1e3
            bad = gate_failed(c)
            ls = ":" if bad else ("--" if c["precision"] == "fp32" else "-")
            ax.step(s, np.arange(1, len(s) + 1) / len(s), where="post", ls=ls,
                    color=FAILED_COLOR if bad else None, label=label(c) + (" (GATE FAILED)" if bad else ""))
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("fraction of runs <= latency")
        ax.set_title(f"single stream, batch 1, {th} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_speedup(result: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    sp = result["analysis"].get("speedups", {})
    cells = [c for c in result["cells"] if c["key"] in sp and c["precision"] != "fp32"
             and c["scenario"] == "single_stream"]
    if not cells:
        return None
    cells.sort(key=lambda c: (c["engine"], c["precision"], c["threads"] or 0))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(cells) + 2), 4))
    xs = np.arange(len(cells))
    vals = [sp[c["key"]]["speedup"] for c in cells]
    bad = [gate_failed(c) for c in cells]
    bars = ax.bar(xs, vals, color=[FAILED_COLOR if b else _COLORS.get(c["engine"], "gray") for c, b in zip(cells, bad)])
    for bar, b in zip(bars, bad):
        if b:
            bar.set_hatch("//")
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xticks(xs, [f"{label(c)}{' (GATE FAILED)' if b else ''}\n{c['threads']}t" for c, b in zip(cells, bad)],
                  rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("p50 speedup vs fp32 (same engine)")
    for x, v, b in zip(xs, vals, bad):
        ax.text(x, v, f"{v:.2f}x" + ("\ngate failed" if b else ""), ha="center", va="bottom", fontsize=7)
    ax.set_title("speedup against the fp32 artifact, single stream, batch 1")
    return _png(fig)


def pareto_front(pts: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both p90 latency and accuracy drop
    (lower is better on both), in order of increasing latency."""
    front, best = [], float("inf")
    for i in sorted(range(len(pts)), key=lambda i: pts[i]):
        if pts[i][1] < best:
            front.append(i)
            best = pts[i][1]
    return front


def label_offsets(pts: list[tuple[float, float]], *, step_pt: float = 8.0) -> list[tuple[float, float]]:
    """Text offsets (points) for the number tags: points that share an accuracy value are staggered
    above/below the marker in turn, so equal-drop rows (all 0 drop) do not print on one line."""
    seen: dict[float, int] = {}
    out = []
    for x, y in pts:
        k = seen.get(round(y, 6), 0)
        seen[round(y, 6)] = k + 1
        lvl = 1 + (k // 2) % 3
        out.append((3.0, (step_pt * lvl - 3) * (1 if k % 2 == 0 else -1) - (0 if k % 2 == 0 else 4)))
    return out


def _pareto_points(result: dict[str, Any]):
    """(p90 ms, fidelity, size, cell) of single-stream cells measured by the result's common
    metric, sorted by latency then loss; and that metric."""
    cells = [c for c in result["cells"] if c["scenario"] == "single_stream" and c["status"] != "error"
             and c["stats"]["percentiles_s"].get("p90") is not None]
    metric = common_metric([fidelity_of(c) for c in cells])
    pts = [(c["stats"]["percentiles_s"]["p90"] * 1e3, f, c.get("size_bytes") or 0, c)
           for c in cells if (f := fidelity_of(c)) is not None and f.metric is metric]
    pts.sort(key=lambda p: (p[0], p[1].loss))
    return pts, metric


def front_indices(pts: list) -> list[int]:
    """Indices of ``_pareto_points`` on the front: latency against fidelity loss, among the
    artifacts that passed their gate only (a gate-failed one is drawn, never on the front)."""
    ok_idx = [i for i, (*_, c) in enumerate(pts) if not gate_failed(c)]
    return [ok_idx[j] for j in pareto_front([(pts[i][0], pts[i][1].loss) for i in ok_idx])]


def plot_pareto(result: dict[str, Any]) -> str | None:
    """Markers carry a short number; the key beside the plot names every number (front rows marked
    with *, gate-failed rows with x), and only Pareto-front points get their full name on the plot.
    The y axis is the fidelity metric, oriented so that better is lower on the plot."""
    import matplotlib.pyplot as plt

    pts, metric = _pareto_points(result)
    if not pts:
        return None
    xy = [(x, f.value) for x, f, _, _ in pts]
    bad = [gate_failed(c) for *_, c in pts]
    front = front_indices(pts)
    fig, (ax, key) = plt.subplots(1, 2, figsize=(11.5, max(4.8, 0.16 * len(pts) + 1.5)),
                                  gridspec_kw={"width_ratios": [3, 2]})
    smax = max(p[2] for p in pts) or 1
    for n, ((x, f, size, c), off, b) in enumerate(zip(pts, label_offsets(xy), bad), start=1):
        ax.scatter(x, f.value, s=30 + 400 * size / smax, alpha=0.6,
                   color=FAILED_COLOR if b else _COLORS.get(c["engine"], "gray"),
                   marker="x" if b else ("o" if c["threads"] == 1 else "s"))
        ax.annotate(str(n), (x, f.value), fontsize=7, xytext=off, textcoords="offset points",
                    fontweight="bold" if n - 1 in front else "normal")
    for j, i in enumerate(front):
        x, f, _, c = pts[i]
        ax.annotate(f"{label(c)} {c['threads']}t", (x, f.value), fontsize=7, xytext=(14, 30 + 12 * (j % 2)),
                    textcoords="offset points", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray"},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "gray", "lw": 0.5, "alpha": 0.85})
    if front:
        ax.plot(*zip(*(xy[i] for i in front)), color="black", lw=1, ls=":", label="Pareto front")
    for eng, col in _COLORS.items():
        if any(c["engine"] == eng for *_, c in pts):
            ax.scatter([], [], color=col, label=eng)
    if any(bad):
        ax.scatter([], [], color=FAILED_COLOR, marker="x", label="GATE FAILED (never on the front)")
    _latency_axis(ax, [x for x, _ in xy])
    if pts[0][1].higher_is_better:
        ax.invert_yaxis()
    ax.set_ylabel(f"{LABELS[metric]} vs the reference" + (" (better is lower on the plot)"
                                                          if pts[0][1].higher_is_better else ""))
    ax.set_title(f"{LABELS[metric]} vs p90 latency vs size\n(marker area = size on disk; circle 1 thread, "
                 "square more, x failed its gate)", fontsize=9)
    ax.margins(x=0.08, y=0.15)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    rows = [f"{'':2}{'#':>3}  {'artifact':<28} {'thr':>3} {'p90 ms':>8} {'fidelity':>9}"]
    rows += [f"{'*' if i in front else ('x' if bad[i] else ''):2}{i + 1:>3}  {label(c)[:28]:<28} {c['threads']:>3} "
             f"{x:>8.4g} {f.value:>9.4g}" for i, (x, f, _, c) in enumerate(pts)]
    rows.append("* = on the Pareto front; x = failed its build's fidelity gate")
    key.axis("off")
    key.text(0, 1, "\n".join(rows), family="monospace", fontsize=7, va="top", ha="left", transform=key.transAxes)
    fig.tight_layout()
    return _png(fig)


def _latency_axis(ax, xs: list[float]) -> None:
    log_x = min(xs) > 0 and max(xs) / min(xs) > 3
    if log_x:
        from matplotlib import ticker

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("p90 latency, ms" + (" (log)" if log_x else ""))
