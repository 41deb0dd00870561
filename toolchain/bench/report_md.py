"""Markdown report (pure: result dict -> text). Shared formatting helpers live here too."""

from __future__ import annotations

from typing import Any

from .analysis import accuracy_drop

INSUFFICIENT = "insufficient samples"


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


def _precision(c: dict[str, Any]) -> str:
    ex = c.get("executed_precision")
    return c["precision"] + (f" (runs {ex})" if ex and ex != c["precision"] else "")


def _row(c: dict[str, Any], sp: dict[str, Any]) -> str:
    drop, kind = accuracy_drop(c)
    dtxt = "n/a" if drop is None else f"{drop:.2f}" + ("*" if kind.startswith("top-1") else "")
    if c["status"] == "error":
        return (f"| {label(c)} | {_precision(c)} | {c['batch']} | {c['threads']} | {c['streams']} | "
                f"{fmt_bytes(c.get('size_bytes'))} | {dtxt} | FAILED | | | | | | |")
    st = c["stats"]
    pc = st["percentiles_s"]
    s = sp.get(c["key"])
    stxt = f"{s['speedup']:.2f}x" if s else "-"
    return (f"| {label(c)} | {_precision(c)} | {c['batch']} | {c['threads']} | {c['streams']} | "
            f"{fmt_bytes(c.get('size_bytes'))} | {dtxt} | {fmt_ms(pc.get('p50'))} | {fmt_ms(pc.get('p90'))} | "
            f"{fmt_ms(pc.get('p99'))} | {st['throughput_per_s']:.1f} | {stxt} | "
            f"{c['load_s'] * 1e3:.0f} / {c['first_inference_s'] * 1e3:.1f} | {fmt_bytes(c.get('peak_rss_bytes'))} |")


HEADER = ("| artifact | precision | batch | threads | streams | size | acc. drop (pts) | p50 ms | p90 ms | p99 ms "
          "| throughput /s | speedup vs fp32 | load / first ms | peak RSS |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def tables(result: dict[str, Any]) -> str:
    sp = result["analysis"].get("speedups", {})
    out = []
    for scen, title in (("single_stream", "Single-stream latency (one request in flight, batch 1) - the headline"),
                        ("throughput", "Throughput (batch > 1 or several requests in flight)")):
        cells = [c for c in result["cells"] if c["scenario"] == scen]
        if not cells:
            continue
        cells.sort(key=lambda c: (c["engine"], c["threads"] or 0, c["batch"], c["streams"], c["precision"], c["key"]))
        out += [f"### {title}", "", HEADER] + [_row(c, sp) for c in cells] + [""]
    return "\n".join(out)


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    s = result["settings"]
    rl = s["run_length"]
    rec = result["analysis"]["recommendation"]
    lines = [
        f"# edgeship bench: {result['source'].get('model', {}).get('name') or result['source']['path']}",
        "",
        f"Host: {env.get('cpu_model')} ({env.get('logical_cpus')} logical CPUs, {env.get('machine')}), "
        f"{env.get('os_pretty') or env.get('os')} {env.get('kernel')}, Python {env.get('python')}; "
        f"engines {', '.join(f'{k} {v}' for k, v in (env.get('engines') or {}).items() if v)}; "
        f"load average before {env.get('load_avg')}.",
        "",
        f"Method: preset `{s['preset']}` (warm-up >= {rl['warmup_min_iters']} runs and >= {rl['warmup_min_s']} s; "
        f"measured >= {rl['min_iters']} runs and >= {rl['min_duration_s']} s), {s['repeats']} fresh process(es) per "
        f"configuration, shuffled order (seed {s['seed']}), threads set on the engine, inputs: "
        f"{_inputs(result)}. p90 needs >= 64 samples and p99 >= 662, otherwise \"{INSUFFICIENT}\". "
        "No outlier trimming; raw samples are in `samples/`.",
        "",
        "## Recommendation",
        "",
        _recommendation(rec),
        "",
        "## Results",
        "",
        tables(result),
        "`acc. drop` is the label accuracy drop against the fp32 model from the build's verification; "
        "values marked * are top-1 disagreement with fp32 (the build had no labels). "
        "`speedup vs fp32` compares p50 against the fp32 artifact on the same engine and configuration.",
        "",
        "## Notes",
        "",
    ]
    lines += [f"- {n}" for n in result["analysis"].get("notes", [])]
    failed = [c for c in result["cells"] if c["status"] != "ok"]
    if failed:
        lines += ["", "## Failed cells", ""]
        for c in failed:
            for e in c["errors"]:
                lines.append(f"- `{c['key']}`: {e['type']}: {e['message']}")
    for sk in result["source"].get("skipped") or []:
        lines.append(f"- artifact `{sk['id']}` not benchmarked: build status {sk['status']} ({sk.get('error')})")
    return "\n".join(lines) + "\n"


def _inputs(result: dict[str, Any]) -> str:
    srcs = {(c.get("inputs") or {}).get("source") for c in result["cells"] if c["status"] != "error"}
    if srcs == {"validation"}:
        if result["source"].get("validation_random"):
            return "the build's validation samples (random data, per its manifest)"
        return "real validation samples from the build"
    if srcs == {"random"}:
        return f"seeded random data matching the IO spec (seed {result['settings']['seed']})"
    return "mixed"


def _recommendation(rec: dict[str, Any]) -> str:
    budget = rec.get("max_accuracy_drop_pts")
    btxt = f"within an accuracy budget of {budget} pts" if budget is not None else "(no accuracy budget set)"
    b = rec.get("best")
    if not b:
        return f"No artifact qualifies on {rec['device']} {btxt}."
    drop = "n/a" if b["accuracy_drop_pts"] is None else f"{b['accuracy_drop_pts']:.2f} pts ({b['accuracy_kind']})"
    lines = [f"On **{rec['device']}**, the fastest artifact {btxt} is **{b['artifact_id']}** "
             f"({b['engine']}, {b['precision']}, runs {b['executed_precision']}) at {b['threads']} thread(s): "
             f"p50 {fmt_ms(b['p50_s'])} ms, p90 {fmt_ms(b['p90_s'])} ms, accuracy drop {drop}."]
    for th, r in rec.get("by_threads", {}).items():
        if r:
            lines.append(f"- {th} thread(s): {r['artifact_id']}" + (f" [hint {r['precision_hint']}]" if r.get('precision_hint') else "")
                         + f", p50 {fmt_ms(r['p50_s'])} ms")
    if rec.get("excluded"):
        lines.append(f"- excluded: " + "; ".join(f"{e['key']} ({e['reason']})" for e in rec["excluded"]))
    return "\n".join(lines)
