"""The report as data (pure): sections of paragraphs, bullet lists and tables, built from a
bench result. :mod:`.report_md` and :mod:`.report_html` render the same document, so the
HTML is made from the result, never by parsing Markdown back.

Every table row of an artifact that failed its build's fidelity gate says so (the ``gate``
column, and the row's ``mark`` for styling); such rows are never recommended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .analysis import fidelity_of, gate_failed
from .fidelity import LABELS, Metric

INSUFFICIENT = "insufficient samples"


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: tuple[bool, ...]  # right-aligned (numeric) columns
    marks: tuple[str | None, ...] = ()  # per row: "gate-failed" | "failed" | None


Block = Union[Paragraph, Bullets, Table]


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    blocks: tuple[Block, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------ formatting
def fmt_ms(v: float | None) -> str:
    return INSUFFICIENT if v is None else f"{v * 1e3:.4g}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def label(c: dict[str, Any]) -> str:
    return c["artifact_id"] + (f" [hint {c['precision_hint']}]" if c.get("precision_hint") else "")


def precision_text(c: dict[str, Any]) -> str:
    """What was asked and what ran: ``fp32 (hint f32, runs fp32)``, ``fp32 (runs bf16)``."""
    parts = []
    if c.get("precision_hint"):
        parts.append(f"hint {c['precision_hint']}")
    ex = c.get("executed_precision")
    if ex and (ex != c["precision"] or c.get("precision_hint")):
        parts.append(f"runs {ex}")
    return c["precision"] + (f" ({', '.join(parts)})" if parts else "")


def fidelity_text(c: dict[str, Any]) -> str:
    f = fidelity_of(c)
    return "n/a" if f is None else f.text()


def gate_text(c: dict[str, Any]) -> str:
    """``GATE FAILED``, ``ok`` (a build artifact that passed), or ``-`` (no verification: a bare file)."""
    if gate_failed(c):
        return "GATE FAILED"
    return "ok" if fidelity_of(c) is not None else "-"


# ------------------------------------------------------------------ tables
HEADER = ("artifact", "precision", "batch", "threads", "streams", "size", "fidelity", "gate", "p50 ms", "p90 ms",
          "p99 ms", "throughput /s", "speedup vs fp32", "load / first ms", "peak RSS", "load avg")
_RIGHT = (False, False, True, True, True, True, False, False, True, True, True, True, True, True, True, True)
SCENARIOS = (("single_stream", "Single-stream latency (one request in flight, batch 1) - the headline"),
             ("throughput", "Throughput (batch > 1 or several requests in flight)"))


def _row(c: dict[str, Any], sp: dict[str, Any]) -> tuple[str, ...]:
    head = (label(c), precision_text(c), str(c["batch"]), str(c["threads"]), str(c["streams"]),
            fmt_bytes(c.get("size_bytes")), fidelity_text(c), gate_text(c))
    if c["status"] == "error":
        err = (c.get("errors") or [c.get("error") or {}])[0]
        msg = (err.get("message") or "").splitlines()[0] if err.get("message") else ""
        why = ": ".join(x for x in (err.get("type"), msg[:80] + ("..." if len(msg) > 80 else "")) if x)
        return head + ("FAILED",) + (why.replace("|", "/"),) + ("",) * 6
    pc = c["stats"]["percentiles_s"]
    s = sp.get(c["key"])
    load = c.get("load_avg_max")
    return head + (fmt_ms(pc.get("p50")), fmt_ms(pc.get("p90")), fmt_ms(pc.get("p99")),
                   f"{c['stats']['throughput_per_s']:.1f}", f"{s['speedup']:.2f}x" if s else "-",
                   f"{c['load_s'] * 1e3:.0f} / {c['first_inference_s'] * 1e3:.1f}",
                   fmt_bytes(c.get("peak_rss_bytes")), "?" if load is None else f"{load:.2f}")


def _mark(c: dict[str, Any]) -> str | None:
    return "failed" if c["status"] == "error" else ("gate-failed" if gate_failed(c) else None)


def table_sections(result: dict[str, Any], *, level: int = 3) -> list[Section]:
    sp = result["analysis"].get("speedups", {})
    out = []
    for scen, title in SCENARIOS:
        cells = [c for c in result["cells"] if c["scenario"] == scen]
        if not cells:
            continue
        cells.sort(key=lambda c: (c["engine"], c["threads"], c["batch"], c["streams"], c["precision"], c["key"]))
        out.append(Section(title, level, (Table(HEADER, tuple(_row(c, sp) for c in cells), _RIGHT,
                                                tuple(_mark(c) for c in cells)),)))
    return out


# ------------------------------------------------------------------ the document
def recommendation_lines(rec: dict[str, Any]) -> tuple[str, list[str]]:
    """(the sentence, the bullet lines) of the recommendation."""
    budget = rec.get("max_accuracy_drop_pts")
    metric = Metric(rec["metric"]) if rec.get("metric") else None
    if budget is None:
        btxt = "(no accuracy budget set)"
    elif rec.get("budget_applies", True):
        btxt = f"within an accuracy budget of {budget} pts"
    else:
        btxt = (f"(the {budget} pts accuracy budget applies to classifiers; "
                f"{LABELS[metric] if metric else 'fidelity'} is judged by the build's gate)")
    b = rec.get("best")
    if not b:
        return f"No artifact qualifies on {rec['device']} {btxt}.", _excluded(rec)
    f = (b.get("fidelity") or {}).get("text", "fidelity n/a")
    sentence = (f"On {rec['device']}, the fastest artifact that passed its fidelity gate {btxt} is "
                f"{b['artifact_id']} ({b['engine']}, {b['precision']}, runs {b['executed_precision']}"
                + (f", hint {b['precision_hint']}" if b.get("precision_hint") else "")
                + f") at {b['threads']} thread(s): p50 {fmt_ms(b['p50_s'])} ms, p90 {fmt_ms(b['p90_s'])} ms, {f}.")
    lines = [f"{th} thread(s): {r['artifact_id']}" + (f" [hint {r['precision_hint']}]" if r.get("precision_hint") else "")
             + f", p50 {fmt_ms(r['p50_s'])} ms" for th, r in rec.get("by_threads", {}).items() if r]
    return sentence, lines + _excluded(rec)


def _excluded(rec: dict[str, Any]) -> list[str]:
    if not rec.get("excluded"):
        return []
    return ["not ranked: " + "; ".join(f"{e['key']} ({e['reason']})" for e in rec["excluded"])]


def _host(result: dict[str, Any]) -> str:
    env = result["environment"]
    return (f"Host: {env.get('cpu_model')} ({env.get('logical_cpus')} logical CPUs, {env.get('machine')}), "
            f"{env.get('os_pretty') or env.get('os')} {env.get('kernel')}, Python {env.get('python')}; engines "
            f"{', '.join(f'{k} {v}' for k, v in (env.get('engines') or {}).items() if v)}; load average before "
            f"{env.get('load_avg')}.")


def _method(result: dict[str, Any]) -> str:
    s = result["settings"]
    rl = s["run_length"]
    ovp = {"deploy": "as deployed (float IR pinned to f32, int8 without a hint)", "auto": "the engine's own choice",
           "f32": "forced f32", "both": "as deployed and the engine's own choice, as separate cells"}
    return (f"Method: preset {s['preset']} (warm-up >= {rl['warmup_min_iters']} runs and >= {rl['warmup_min_s']} s; "
            f"measured >= {rl['min_iters']} runs and >= {rl['min_duration_s']} s), {s['repeats']} fresh process(es) "
            f"per configuration, shuffled order (seed {s['seed']}), threads set on the engine, OpenVINO precision "
            f"{ovp.get(s.get('ov_precision'), s.get('ov_precision'))}, inputs: {_inputs(result)}. p90 needs >= 64 "
            f"samples and p99 >= 662, otherwise \"{INSUFFICIENT}\". No outlier trimming; raw samples are in samples/.")


def _fidelity_note(result: dict[str, Any]) -> str:
    src = result["source"]
    metric = result["analysis"].get("recommendation", {}).get("metric")
    what = LABELS[Metric(metric)] if metric else "no fidelity figure"
    task = src.get("task")
    how = ("recorded in the manifest" if src.get("task_recorded")
           else "inferred from the outputs and labels: the manifest records none")
    head = f"Fidelity: {what} against the reference" + (f" (task {task}, {how})" if task else "")
    return (head + ". An artifact that failed its build's fidelity gate is marked GATE FAILED in every table and "
            "plot and is never recommended. speedup vs fp32 compares p50 against the fp32 artifact on the same "
            "engine and configuration; load avg is the highest 1-minute load average around the cell's runs.")


def document(result: dict[str, Any]) -> list[Section]:
    """The whole report as sections (title at level 1, the rest below)."""
    rec = result["analysis"]["recommendation"]
    sentence, bullets = recommendation_lines(rec)
    secs = [Section(f"edgeship bench: {result['source'].get('model', {}).get('name') or result['source']['path']}",
                    1, (Paragraph(_host(result)), Paragraph(_method(result)))),
            Section("Recommendation", 2, (Paragraph(sentence),) + ((Bullets(tuple(bullets)),) if bullets else ())),
            Section("Results", 2, (Paragraph(_fidelity_note(result)),))]
    secs += table_sections(result)
    secs.append(Section("Notes", 2, (Bullets(tuple(result["analysis"].get("notes", []))),)))
    failed = [f"{c['key']}: {e['type']}: {e['message']}" for c in result["cells"] if c["status"] != "ok"
              for e in c["errors"]]
    failed += [f"artifact {sk['id']} not benchmarked: build status {sk['status']} ({sk.get('error')})"
               for sk in result["source"].get("skipped") or []]
    if failed:
        secs.append(Section("Failed cells", 2, (Bullets(tuple(failed)),)))
    return secs


def _inputs(result: dict[str, Any]) -> str:
    srcs = {(c.get("inputs") or {}).get("source") for c in result["cells"] if c["status"] != "error"}
    if srcs == {"validation"}:
        if result["source"].get("validation_random"):
            return "the build's validation samples (random data, per its manifest)"
        return "real validation samples from the build"
    if srcs == {"random"}:
        return f"seeded random data matching the IO spec (seed {result['settings']['seed']})"
    return "mixed"
