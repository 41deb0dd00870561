"""``edgeship bench compare OLD NEW``: flag latency regressions beyond the measured noise (pure).

Cells are matched by configuration key. For each pair, the p50 change counts as a regression
when it exceeds BOTH the minimum relative change (default 5%) AND the noise:
- when both cells carry a p50 order-statistic CI, the new CI's low end must lie above the old
  CI's high end (the intervals do not overlap);
- otherwise the change must exceed 3 standard errors of the difference of medians, from each
  cell's coefficient of variation and count (SE(median) ~ 1.2533 * std / sqrt(n)).
A cell that was measured before and fails now is a regression too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_REL = 0.05

#: environment fields whose change makes figures hard to compare
_ENV_FIELDS = ("cpu_model", "logical_cpus", "kernel", "python")


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
    eo, en = old.get("environment", {}), new.get("environment", {})
    out["environment_changes"] = {k: [eo.get(k), en.get(k)] for k in _ENV_FIELDS if eo.get(k) != en.get(k)}
    out["source_changes"] = {k: [a, b] for k, a, b in (("model", _model_name(old), _model_name(new)),)
                             if a != b}
    out["regressed"] = bool(out["regressions"] or out["broken"])
    return out


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
        lines.append("WARNING: environments differ: " + ", ".join(
            f"{k}: {a!r} -> {b!r}" for k, (a, b) in cmp["environment_changes"].items()))
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
    lines.append("")
    lines.append(f"{len(cmp['regressions'])} regression(s), {len(cmp['broken'])} broken, "
                 f"{len(cmp['improvements'])} improvement(s), {len(cmp['same'])} within noise.")
    return "\n".join(lines)
