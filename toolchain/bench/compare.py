"""``edgeship bench compare OLD NEW``: flag latency regressions beyond the measured noise (pure).

Cells are matched by configuration key. For each pair, the p50 change counts as a regression
when it exceeds BOTH the minimum relative change (default 5%) AND the noise:
- when both cells carry a p50 order-statistic CI, the new CI's low end must lie above the old
  CI's high end (the intervals do not overlap);
- otherwise the change must exceed 3 standard errors of the difference of medians, from each
  cell's coefficient of variation and count (SE(median) ~ 1.2533 * std / sqrt(n)).
A cell that was measured before and fails now is a regression too, and so is an artifact
whose fidelity gate passed before and fails now. Fidelity is compared by the metric of the
model's task (never top-1 agreement for a non-classifier).

The machine matters as much as the code: when the fingerprints of the two runs differ (CPU,
cores, ISA flags, kernel, Python, engine versions, governor) or their load averages do
(busier by more than half a core, or either run above half the cores), the comparison says
so and that the difference may be the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_REL = 0.05

#: environment fields whose change makes figures hard to compare
_ENV_FIELDS = ("cpu_model", "logical_cpus", "allowed_cpus", "machine", "isa_x86", "isa_arm", "mem_total_bytes",
               "kernel", "python", "engines", "cpu_governor", "thread_env", "virtualized", "container")
#: load averages further apart than this (in cores) make two runs' latencies hard to compare
LOAD_DIFF_CORES = 0.5


@dataclass(frozen=True)
class Change:
    key: str
    old_p50_s: float
    new_p50_s: float
    rel: float  # new/old - 1
    threshold_rel: float
    method: str  # "ci" | "cv"

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _p50(c: dict[str, Any]) -> float | None:
    return ((c.get("stats") or {}).get("percentiles_s") or {}).get("p50")


def _ci(c: dict[str, Any]) -> list[float] | None:
    return ((c.get("stats") or {}).get("ci_s") or {}).get("p50")


def _rel_se(c: dict[str, Any]) -> float:
    st = c["stats"]
    n = max(int(st.get("count") or 1), 1)
    return 1.2533 * float(st.get("cv") or 0.0) / math.sqrt(n)


def judge(old: dict[str, Any], new: dict[str, Any], *, min_rel: float = DEFAULT_MIN_REL) -> tuple[str, Change]:
    """Classify one matched pair: "regression", "improvement" or "same"."""
    o, n = _p50(old), _p50(new)
    rel = n / o - 1.0
    oci, nci = _ci(old), _ci(new)
    if oci and nci:
        noise = max((oci[1] - o) / o, (o - oci[0]) / o) + max((nci[1] - n) / n, (n - nci[0]) / n)
        worse = rel > min_rel and nci[0] > oci[1]
        better = -rel > min_rel and nci[1] < oci[0]
        ch = Change(old["key"], o, n, rel, max(min_rel, noise), "ci")
    else:
        noise = 3.0 * math.hypot(_rel_se(old), _rel_se(new))
        thr = max(min_rel, noise)
        worse, better = rel > thr, -rel > thr
        ch = Change(old["key"], o, n, rel, thr, "cv")
    return ("regression" if worse else "improvement" if better else "same"), ch


def compare(old: dict[str, Any], new: dict[str, Any], *, min_rel: float = DEFAULT_MIN_REL) -> dict[str, Any]:
    """Compare two validated results. ``regressed`` is True when any cell got slower or broke."""
    oc = {c["key"]: c for c in old["cells"]}
    nc = {c["key"]: c for c in new["cells"]}
    out: dict[str, Any] = {"min_rel": min_rel, "regressions": [], "improvements": [], "same": [],
                           "broken": [], "missing_in_new": sorted(set(oc) - set(nc)),
                           "new_only": sorted(set(nc) - set(oc)), "not_comparable": []}
    for key in sorted(set(oc) & set(nc)):
        o, n = oc[key], nc[key]
        if _p50(o) is not None and _p50(n) is None and n["status"] == "error":
            out["broken"].append({"key": key, "error": (n.get("errors") or [{}])[0]})
            continue
        if _p50(o) is None or _p50(n) is None:
            out["not_comparable"].append(key)
            continue
        verdict, ch = judge(o, n, min_rel=min_rel)
        {"regression": out["regressions"], "improvement": out["improvements"], "same": out["same"]}[verdict].append(ch.to_json())
    out["fidelity"] = fidelity_changes(oc, nc)
    eo, en = old.get("environment", {}), new.get("environment", {})
    out["environment_changes"] = env_diff(eo, en)
    out["load"] = load_change(old, new)
    out["machine_warning"] = bool(out["environment_changes"] or out["load"]["differs"])
    out["source_changes"] = {k: [a, b] for k, a, b in (("model", _model_name(old), _model_name(new)),)
                             if a != b}
    out["regressed"] = bool(out["regressions"] or out["broken"] or out["fidelity"]["newly_failed"])
    return out


def env_diff(eo: dict[str, Any], en: dict[str, Any]) -> dict[str, list[Any]]:
    """Fingerprint fields that differ (dict fields per key, e.g. ``engines.openvino``); a field
    one side did not record is not a difference."""
    out: dict[str, list[Any]] = {}
    for k in _ENV_FIELDS:
        if k not in eo or k not in en or eo[k] == en[k]:
            continue
        a, b = eo[k], en[k]
        if isinstance(a, dict) and isinstance(b, dict):
            out.update({f"{k}.{s}": [a.get(s), b.get(s)] for s in sorted(set(a) | set(b)) if a.get(s) != b.get(s)})
        else:
            out[k] = [a, b]
    return out


def run_load(res: dict[str, Any]) -> float | None:
    """The highest 1-minute load average a run recorded (host before the run, every trial)."""
    loads = [c.get("load_avg_max") for c in res.get("cells", []) if c.get("load_avg_max") is not None]
    loads += [t[k][0] for c in res.get("cells", []) for t in c.get("trials", [])
              for k in ("load_avg_before", "load_avg_after") if t.get(k)]
    env = res.get("environment") or {}
    if env.get("load_avg"):
        loads.append(env["load_avg"][0])
    return max(loads) if loads else None


def load_change(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Whether the two runs ran on a comparably loaded machine."""
    lo, ln = run_load(old), run_load(new)
    cpus = (new.get("environment") or {}).get("logical_cpus") or (old.get("environment") or {}).get("logical_cpus") or 1
    differs = (lo is not None and ln is not None
               and (abs(lo - ln) > LOAD_DIFF_CORES or max(lo, ln) > 0.5 * cpus))
    return {"old": lo, "new": ln, "cpus": cpus, "differs": bool(differs)}


def fidelity_changes(oc: dict[str, dict[str, Any]], nc: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per matched cell: the fidelity before and after (by its metric), and the artifacts whose
    gate passed before and fails now."""
    from .analysis import fidelity_of, gate_failed

    rows, newly_failed = [], []
    for key in sorted(set(oc) & set(nc)):
        fo, fn = fidelity_of(oc[key]), fidelity_of(nc[key])
        if fo is None and fn is None:
            continue
        if fo is not None and fn is not None and fo.metric is fn.metric and fo.value == fn.value \
                and gate_failed(oc[key]) == gate_failed(nc[key]):
            continue
        rows.append({"key": key, "old": fo.text() if fo else None, "new": fn.text() if fn else None,
                     "comparable": fo is not None and fn is not None and fo.metric is fn.metric,
                     "worse": fo is not None and fn is not None and fo.metric is fn.metric and fn.loss > fo.loss,
                     "old_gate_failed": gate_failed(oc[key]), "new_gate_failed": gate_failed(nc[key])})
        if not gate_failed(oc[key]) and gate_failed(nc[key]):
            newly_failed.append(key)
    return {"changes": rows, "newly_failed": newly_failed}


def _model_name(res: dict[str, Any]) -> str | None:
    m = (res.get("source") or {}).get("model")
    return m.get("name") if isinstance(m, dict) else m


def format_comparison(cmp: dict[str, Any]) -> str:
    lines = [f"# bench compare (p50, regression = slower by > max({cmp['min_rel']:.0%}, measured noise))", ""]
    if cmp.get("source_changes"):
        lines.append("WARNING: different models: " + ", ".join(
            f"{k}: {a!r} -> {b!r}" for k, (a, b) in cmp["source_changes"].items())
            + " (cells with the same key measure different models)")
        lines.append("")
    if cmp["environment_changes"]:
        lines.append("WARNING: the machines' fingerprints differ: " + ", ".join(
            f"{k}: {a!r} -> {b!r}" for k, (a, b) in cmp["environment_changes"].items())
            + ". The difference may be the machine.")
        lines.append("")
    ld = cmp.get("load") or {}
    if ld.get("differs"):
        lines.append(f"WARNING: the load average differed (old run up to {ld['old']:.2f}, new run up to "
                     f"{ld['new']:.2f} on {ld['cpus']} CPUs). The difference may be the machine, not the model: "
                     "re-run both on an idle machine before trusting a change.")
        lines.append("")
    lines += ["| cell | old p50 ms | new p50 ms | change | threshold | verdict |", "|---|---:|---:|---:|---:|---|"]
    for verdict, rows in (("REGRESSION", cmp["regressions"]), ("improvement", cmp["improvements"]),
                          ("same", cmp["same"])):
        for r in rows:
            lines.append(f"| {r['key']} | {r['old_p50_s'] * 1e3:.3f} | {r['new_p50_s'] * 1e3:.3f} | "
                         f"{r['rel']:+.1%} | {r['threshold_rel']:.1%} ({r['method']}) | {verdict} |")
    for b in cmp["broken"]:
        lines.append(f"| {b['key']} | | FAILED | | | BROKEN: {b['error'].get('message', '')[:120]} |")
    for k in cmp["missing_in_new"]:
        lines.append(f"| {k} | | missing | | | not measured in NEW |")
    fid = cmp.get("fidelity") or {"changes": [], "newly_failed": []}
    if fid["changes"]:
        lines += ["", "| cell | old fidelity | new fidelity | note |", "|---|---|---|---|"]
        for r in fid["changes"]:
            note = ("GATE NEWLY FAILED" if r["key"] in fid["newly_failed"] else
                    "worse" if r["worse"] else "" if r["comparable"] else "different metrics: not comparable")
            lines.append(f"| {r['key']} | {r['old'] or 'n/a'}{' (gate failed)' if r['old_gate_failed'] else ''} | "
                         f"{r['new'] or 'n/a'}{' (gate failed)' if r['new_gate_failed'] else ''} | {note} |")
    lines.append("")
    lines.append(f"{len(cmp['regressions'])} regression(s), {len(cmp['broken'])} broken, "
                 f"{len(fid['newly_failed'])} newly gate-failed, "
                 f"{len(cmp['improvements'])} improvement(s), {len(cmp['same'])} within noise."
                 + (" The machines differ (see the warnings): the difference may be the machine."
                    if cmp.get("machine_warning") else ""))
    return "\n".join(lines)
