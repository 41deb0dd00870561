"""Self-contained HTML report: the Markdown content plus three plots embedded as base64 PNG.

Plots: latency distribution per target (empirical CDF of the raw samples, single stream),
speedup against fp32 per engine, and the Pareto view (p90 latency vs accuracy drop, marker
area = size on disk; markers numbered, a key beside the plot names them, only the
Pareto front is labelled in place). matplotlib is imported lazily with the Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from . import report_md
from .analysis import accuracy_drop

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
            ls = "--" if c["precision"] == "fp32" else "-"
            ax.step(s, np.arange(1, len(s) + 1) / len(s), where="post", ls=ls, label=report_md.label(c))
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
    ax.bar(xs, vals, color=[_COLORS.get(c["engine"], "gray") for c in cells])
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xticks(xs, [f"{report_md.label(c)}\n{c['threads']}t" for c in cells], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("p50 speedup vs fp32 (same engine)")
    for x, v in zip(xs, vals):
        ax.text(x, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=7)
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


def plot_pareto(result: dict[str, Any]) -> str | None:
    """Markers carry a short number; the key beside the plot names every number (front rows marked
    with *), and only Pareto-front points get their full name on the plot."""
    import matplotlib.pyplot as plt

    pts = []
    for c in result["cells"]:
        if c["scenario"] != "single_stream" or c["status"] == "error":
            continue
        p90 = c["stats"]["percentiles_s"].get("p90")
        drop, _ = accuracy_drop(c)
        if p90 is None or drop is None:
            continue
        pts.append((p90 * 1e3, drop, c.get("size_bytes") or 0, c))
    if not pts:
        return None
    pts.sort(key=lambda p: (p[0], p[1]))
    xy = [(x, y) for x, y, _, _ in pts]
    front = pareto_front(xy)
    fig, (ax, key) = plt.subplots(1, 2, figsize=(11.5, max(4.8, 0.16 * len(pts) + 1.5)),
                                  gridspec_kw={"width_ratios": [3, 2]})
    smax = max(p[2] for p in pts) or 1
    for n, ((x, y, size, c), off) in enumerate(zip(pts, label_offsets(xy)), start=1):
        ax.scatter(x, y, s=30 + 400 * size / smax, alpha=0.6, color=_COLORS.get(c["engine"], "gray"),
                   marker="o" if c["threads"] == 1 else "s")
        ax.annotate(str(n), (x, y), fontsize=7, xytext=off, textcoords="offset points",
                    fontweight="bold" if n - 1 in front else "normal")
    for j, i in enumerate(front):
        x, y, _, c = pts[i]
        ax.annotate(f"{report_md.label(c)} {c['threads']}t", (x, y), fontsize=7, xytext=(14, 30 + 12 * (j % 2)),
                    textcoords="offset points", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray"},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "gray", "lw": 0.5, "alpha": 0.85})
    ax.plot(*zip(*(xy[i] for i in front)), color="black", lw=1, ls=":", label="Pareto front")
    for eng, col in _COLORS.items():
        if any(c["engine"] == eng for *_, c in pts):
            ax.scatter([], [], color=col, label=eng)
    xs = [x for x, _ in xy]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 3
    if log_x:
        from matplotlib import ticker

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("p90 latency, ms" + (" (log)" if log_x else ""))
    ax.set_ylabel("accuracy drop (or top-1 disagreement), pts")
    ax.set_title("accuracy vs p90 latency vs size\n(marker area = size on disk; circle 1 thread, square more)",
                 fontsize=9)
    ax.margins(x=0.08, y=0.15)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    rows = [f"{'':2}{'#':>3}  {'artifact':<28} {'thr':>3} {'p90 ms':>8} {'drop':>6}"]
    rows += [f"{'*' if i in front else '':2}{i + 1:>3}  {report_md.label(c)[:28]:<28} {c['threads']:>3} "
             f"{x:>8.4g} {y:>6.2f}" for i, (x, y, _, c) in enumerate(pts)]
    rows.append("* = on the Pareto front")
    key.axis("off")
    key.text(0, 1, "\n".join(rows), family="monospace", fontsize=7, va="top", ha="left", transform=key.transAxes)
    fig.tight_layout()
    return _png(fig)


def _md_to_html(md: str) -> str:
    """Tiny Markdown subset (headings, tables, bullets, bold/code) -> HTML; enough for our report."""
    import re

    out, in_table, in_list = [], False, False

    def inline(t: str) -> str:
        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    for line in md.splitlines():
        if line.startswith("|"):
            cols = [x.strip() for x in line.strip("|").split("|")]
            if set("".join(cols)) <= set("-:"):
                continue
            if not in_table:
                out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cols) + "</tr>")
                in_table = True
            else:
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cols) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        m = re.match(r"^(#+) (.*)", line)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_table:
        out.append("</table>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:8px 0}code{background:#f4f4f4}")


def render(result: dict[str, Any]) -> str:
    """The full HTML page (no external resources)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    body = _md_to_html(report_md.render(result))
    figs = [("Latency distribution per target", plot_distribution(result)),
            ("Speedup against fp32", plot_speedup(result)),
            ("Accuracy vs p90 latency vs size (Pareto view)", plot_pareto(result))]
    plots = "".join(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="data:image/png;base64,{b64}">'
                    for t, b64 in figs if b64)
    missing = [t for t, b64 in figs if not b64]
    if missing:
        plots += "<p>Not plotted (no data): " + html.escape(", ".join(missing)) + "</p>"
    title = html.escape(f"edgeship bench: {result['source'].get('model', {}).get('name') or result['source']['path']}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style></head>"
            f"<body>{body}<h1>Plots</h1>{plots}</body></html>\n")
