"""`edgeship data inspect`: what a pulled capture set holds, against the bundle's baseline.

Per (device, release) group and over the whole set: captures, samples, rules, labels, time
range; per input and output tensor the range and distribution (min, max, mean, std, p1, p50,
p99, non-finite share) and, with a bundle (``--bundle``: its ``model.json`` baseline), the
share of values outside the baseline's [min, max] and the mean's shift in baseline standard
deviations; for classifiers the predicted-class mix of the class output (the bundle's, that of
its drift baseline, else picked by name or values among the float [N, C] outputs) and the
label mix. The set is verified first: a missing, partial, tampered or unlisted file is
refused, naming it.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import captures

ALL = "*"


@dataclass
class _Group:
    captures: int = 0
    samples: int = 0
    labelled: int = 0
    rules: Counter = field(default_factory=Counter)
    ts: list[int] = field(default_factory=list)
    tensors: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    predicted: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)


def tensor_summary(arrays: list[np.ndarray], baseline: Any | None) -> dict[str, Any]:
    """Range and distribution of one tensor's values (all samples), against a baseline's
    ``mean/std/min/max`` when given."""
    x = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    finite = x[np.isfinite(x)]
    out: dict[str, Any] = {"values": int(x.size), "nonfinite_share": float(1 - finite.size / x.size) if x.size else 0.0}
    if finite.size:
        p1, p50, p99 = np.percentile(finite, [1, 50, 99])
        out.update(min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()),
                   std=float(finite.std()), p1=float(p1), p50=float(p50), p99=float(p99))
    if baseline is not None and finite.size:
        sd = baseline.std if baseline.std > 1e-12 else 1e-12
        out["baseline"] = {"mean": baseline.mean, "std": baseline.std, "min": baseline.min, "max": baseline.max}
        out["out_of_range_share"] = float(np.mean((finite < baseline.min) | (finite > baseline.max)))
        out["mean_shift_sd"] = float((finite.mean() - baseline.mean) / sd)
    return out


def _class_output(cap, info) -> str | None:
    """The output that holds class scores: the bundle's class output (its drift baseline's class
    mix) when it has one, else of the capture's float ``[N, C]`` outputs (the bundle's
    ``[N, C]`` ones with a bundle) the one :func:`~toolchain.compile.fidelity.pick_class_output` picks."""
    from ..compile.fidelity import pick_class_output

    if info is not None and info.class_output:
        return info.class_output if info.class_output in cap.outputs else None
    names = [s.name for s in info.outputs if len(s.shape) == 2] if info is not None else list(cap.outputs)
    return pick_class_output({n: cap.outputs[n] for n in names if n in cap.outputs and
                              np.issubdtype(cap.outputs[n].dtype, np.floating)})


def summarize(root: str | os.PathLike, *, info: Any | None = None) -> dict[str, Any]:
    """The inspect report of a capture set (``info``: the bundle's BundleInfo, for its baseline).

    Raises: CaptureFormatError / CaptureSetRefusedError (files named), DataError (empty set).
    """
    caps = captures.load(root)
    groups: dict[tuple, _Group] = defaultdict(_Group)
    class_out = None
    for entry, cap in caps:
        m = cap.meta
        key = (f"{m.fleet}/{m.device}", m.model.get("name"), m.model.get("release"))
        class_out = class_out or _class_output(cap, info)
        for g in (groups[key], groups[(ALL, ALL, ALL)]):
            g.captures += 1
            g.samples += m.samples
            g.labelled += m.samples if m.labels else 0
            g.rules[m.rule] += 1
            g.ts.append(m.ts_ms)
            for k, v in cap.inputs.items():
                g.tensors[k].append(v)
            for k, v in cap.outputs.items():
                g.tensors[f"out:{k}"].append(v)
            if class_out and class_out in cap.outputs:
                g.predicted.update(int(c) for c in cap.outputs[class_out].argmax(axis=-1).reshape(-1))
            if cap.labels is not None:
                g.labels.update(int(c) for c in cap.labels)
    baseline = _baselines(info)
    report_groups = []
    for (device, model, release), g in sorted(groups.items(), key=lambda kv: (kv[0][0] == ALL, str(kv[0]))):
        report_groups.append({
            "device": device, "model": model, "release": release, "captures": g.captures, "samples": g.samples,
            "labelled_samples": g.labelled, "rules": dict(sorted(g.rules.items())),
            "time_range_utc": [captures._utc(min(g.ts)), captures._utc(max(g.ts))] if g.ts else None,
            "tensors": {k: tensor_summary(v, baseline.get(k)) for k, v in sorted(g.tensors.items())},
            "predicted_class_mix": _mix(g.predicted), "label_mix": _mix(g.labels),
        })
    prov = captures.provenance_of(captures.ff.CaptureIndex(tuple(e for e, _ in caps)), source=root)
    return {"source": os.fspath(root), "verified": True, "sha256": prov["sha256"], "captures": prov["files"],
            "samples": prov["samples"], "devices": prov["devices"], "releases": prov["releases"],
            "time_range_utc": prov["time_range_utc"], "class_output": class_out,
            "baseline": None if info is None else {"model": info.name, "release": info.release},
            "groups": report_groups}


def _baselines(info: Any | None) -> Mapping[str, Any]:
    if info is None:
        return {}
    return {**dict(info.input_stats), **{f"out:{k}": v for k, v in info.output_stats.items()}}


def _mix(c: Counter) -> dict[str, float] | None:
    n = sum(c.values())
    return {str(k): round(v / n, 4) for k, v in sorted(c.items())} if n else None


def render(report: Mapping[str, Any]) -> str:
    """The report as text tables."""
    from ..console import fmt_float, format_table

    tr = report["time_range_utc"] or ["-", "-"]
    lines = [f"capture set {report['source']}: {report['captures']} captures, {report['samples']} samples from "
             f"{len(report['devices'])} device(s), {len(report['releases'])} release(s), {tr[0]} .. {tr[1]}; "
             f"every file verified (sha256 {report['sha256'][:12]})", ""]
    rows = [(g["device"], g["model"], g["release"], g["captures"], g["samples"], g["labelled_samples"],
             ", ".join(f"{k} {v}" for k, v in g["rules"].items()),
             (g["time_range_utc"] or ["-"])[0], (g["time_range_utc"] or ["-", "-"])[1]) for g in report["groups"]]
    lines.append(format_table(["device", "model", "release", "captures", "samples", "labelled", "rules",
                               "first", "last"], rows, align="lllrrrlll"))
    trows = []
    for g in report["groups"]:
        for name, t in g["tensors"].items():
            trows.append((name, g["device"], g["release"], t["values"], fmt_float(t.get("min")), fmt_float(t.get("max")),
                          fmt_float(t.get("mean")), fmt_float(t.get("std")), fmt_float(t.get("p1")),
                          fmt_float(t.get("p99")), fmt_float(t.get("out_of_range_share")),
                          fmt_float(t.get("mean_shift_sd"))))
    base = report["baseline"]
    lines += ["", "per tensor" + (f" (baseline: {base['model']} release {base['release']})" if base else
                                  " (no --bundle: no baseline)"),
              format_table(["tensor", "device", "release", "values", "min", "max", "mean", "std", "p1", "p99",
                            "out_of_range", "mean_shift_sd"], trows, align="lllrrrrrrrrr")]
    if report["class_output"]:
        crows = [(g["device"], g["release"], _fmt_mix(g["predicted_class_mix"]), _fmt_mix(g["label_mix"]))
                 for g in report["groups"]]
        lines += ["", f"class mix (output {report['class_output']!r})",
                  format_table(["device", "release", "predicted", "labels"], crows)]
    return "\n".join(lines)


def _fmt_mix(mix: Mapping[str, float] | None) -> str | None:
    if not mix:
        return None
    return " ".join(f"{k}:{v * 100:.0f}%" for k, v in mix.items())
