"""Markdown rendering of the report document (pure: result dict -> text)."""

from __future__ import annotations

from typing import Any

from .report_model import (INSUFFICIENT, Bullets, Paragraph, Section, Table, document, fmt_bytes, fmt_ms, label,
                           recommendation_lines, table_sections)

__all__ = ["INSUFFICIENT", "fmt_bytes", "fmt_ms", "label", "render", "tables", "recommendation"]


def _table(t: Table) -> list[str]:
    out = ["| " + " | ".join(t.header) + " |", "|" + "|".join("---:" if r else "---" for r in t.right) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in t.rows]
    return out


def _sections(secs: list[Section]) -> str:
    lines: list[str] = []
    for s in secs:
        lines += ["#" * s.level + " " + s.title, ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                lines += [b.text, ""]
            elif isinstance(b, Bullets):
                lines += [f"- {i}" for i in b.items] + [""]
            else:
                lines += _table(b) + [""]
    return "\n".join(lines)


def tables(result: dict[str, Any]) -> str:
    """The per-scenario result tables (what the CLI prints)."""
    return _sections(table_sections(result))


def recommendation(result: dict[str, Any]) -> str:
    sentence, bullets = recommendation_lines(result["analysis"]["recommendation"])
    return "\n".join([sentence] + [f"- {b}" for b in bullets])


def render(result: dict[str, Any]) -> str:
    return _sections(document(result)).rstrip() + "\n"
