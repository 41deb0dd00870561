"""Self-contained HTML report, rendered from the report document (:mod:`.report_model`) and
the plots (:mod:`.report_plots`, base64 PNG). No external resources, no scripts."""

from __future__ import annotations

import html
from typing import Any

from . import report_plots
from .report_model import Bullets, Paragraph, Section, Table, document

_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}td.r{text-align:right}"
        "tr.gate-failed td{background:#f6f6f6;color:#777}tr.gate-failed td.gate{color:#b00;font-weight:bold}"
        "tr.failed td{background:#fdecec}img{max-width:100%;border:1px solid #ddd;margin:8px 0}")


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    rows = []
    for i, row in enumerate(t.rows):
        mark = t.marks[i] if i < len(t.marks) else None
        cls = f' class="{mark}"' if mark else ""
        cells = "".join(
            f'<td class="{"r" if right else ("gate" if h == "gate" else "l")}">{html.escape(v)}</td>'
            for v, right, h in zip(row, t.right, t.header))
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _sections(secs: list[Section]) -> str:
    out = []
    for s in secs:
        out.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        for b in s.blocks:
            if isinstance(b, Paragraph):
                out.append(f"<p>{html.escape(b.text)}</p>")
            elif isinstance(b, Bullets):
                out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
            else:
                out.append(_table(b))
    return "\n".join(out)


def render(result: dict[str, Any]) -> str:
    """The full HTML page."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    body = _sections(document(result))
    figs = [("Latency distribution per target", report_plots.plot_distribution(result)),
            ("Speedup against fp32", report_plots.plot_speedup(result)),
            ("Fidelity vs p90 latency vs size (Pareto view)", report_plots.plot_pareto(result))]
    plots = "".join(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="data:image/png;base64,{b64}">'
                    for t, b64 in figs if b64)
    missing = [t for t, b64 in figs if not b64]
    if missing:
        plots += "<p>Not plotted (no data): " + html.escape(", ".join(missing)) + "</p>"
    title = html.escape(f"edgeship bench: {result['source'].get('model', {}).get('name') or result['source']['path']}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style></head>"
            f"<body>{body}<h1>Plots</h1>{plots}</body></html>\n")
