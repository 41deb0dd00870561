"""What `edgeship rollout status` shows: per wave its counts and state, the criteria values,
the failed devices by name. :func:`summary` builds the document (the controller publishes
it retained on ``_rollouts/{fleet}/{id}/state``); :func:`render` prints it."""

from __future__ import annotations

import time
from typing import Any

from ...console import format_table
from .machine import RolloutState, Status


def _wave_state(st: RolloutState, i: int, committed: int, results: int, size: int, now_ms: int) -> str:
    if i > st.wave or (i == st.wave and i not in st.started_ms):
        return "waiting"
    if i < st.wave or (st.status is Status.COMPLETED and i == st.wave):
        return "passed"
    if st.status is not Status.RUNNING:
        return st.status.value
    if results < size:
        return "installing"
    bake = st.plan.waves[i].criteria.bake_s
    left = (st.settled_ms.get(i, now_ms) + bake * 1000 - now_ms) / 1000
    return f"baking {max(0.0, left):.0f}s left" if left > 0 else "baked, judging model health"


def summary(st: RolloutState, view: Any, now_ms: int) -> dict[str, Any]:
    """The status document of a rollout (``view`` may be None: from the journal alone)."""
    waves = []
    for i, devices in enumerate(st.waves):
        res = [st.results[d] for d in devices if d in st.results]
        committed = sum(r["state"] == "committed" for r in res)
        assigned = sum(d in st.assigned for d in devices)
        waves.append({"wave": i + 1, "size": len(devices), "spec": st.plan.waves[i].size, "assigned": assigned,
                      "committed": committed, "failed": len(res) - committed, "pending": len(devices) - len(res),
                      "state": _wave_state(st, i, committed, len(res), len(devices), now_ms)})
    failures = [{"device": d, "wave": st.wave_of(d) + 1, "reason": r["reason"]}
                for d, r in sorted(st.results.items()) if r["state"] == "failed"]
    rolled = None
    if st.rollback and view is not None:
        back = sum(1 for d, a in st.assigned.items() if d in st.rollback
                   and (view.obs(d).active.get("release") == a.from_release))
        rolled = {"sent": len(st.rollback), "back": back}
    return {"schema": "edgeship.rollout/1", "id": st.plan.id, "fleet": st.plan.fleet, "model": st.plan.model,
            "release": st.plan.release, "status": st.status.value, "reason": st.reason, "wave": st.wave + 1,
            "waves": waves, "criteria": st.verdicts, "failures": failures[:100], "failed_total": len(failures),
            "breaches": st.breaches[-10:], "rollback": rolled, "cleared": len(st.cleared),
            "concurrency": st.plan.concurrency, "updated_ms": now_ms}


def render(doc: dict[str, Any]) -> str:
    lines = [f"rollout {doc['id']}  fleet {doc['fleet']}  {doc['model']} r{doc['release']}  "
             f"status {doc['status'].upper()}" + (f"\n  {doc['reason']}" if doc.get("reason") else "")]
    rows = [(w["wave"], w["spec"], w["size"], w["assigned"], w["committed"], w["failed"], w["pending"], w["state"])
            for w in doc["waves"]]
    lines.append(format_table(("WAVE", "SIZE", "DEVICES", "ASSIGNED", "COMMITTED", "FAILED", "PENDING", "STATE"), rows))
    crit = doc.get("criteria") or {}
    inst, model = crit.get("install") or {}, crit.get("model") or {}
    if inst:
        v = inst.get("values", {})
        lines.append(f"install health (wave {crit.get('wave', 0) + 1}): {inst.get('state')}: "
                     f"{v.get('committed')}/{v.get('size')} committed, failures {v.get('failure_pct')}%"
                     + (f" - {'; '.join(inst['reasons'])}" if inst.get("reasons") else ""))
    if model:
        v = model.get("values", {})
        err, p95 = v.get("error_rate") or {}, v.get("p95") or {}
        figures = (f"error rate {err.get('new')} vs {err.get('control')} (z {err.get('z')}), p95 x{p95.get('ratio')} "
                   f"(z {p95.get('z')})" if err else
                   f"new {v.get('new', {}).get('requests')} / control {v.get('control', {}).get('requests')} requests")
        drift = v.get("drift")
        if drift:
            figures += (f", drift alarms {drift.get('new'):.0%} of the new release's devices vs "
                        f"{drift.get('control'):.0%} (z {drift.get('z')})")
        lines.append(f"model health: {model.get('state')}: {figures}"
                     + (f" - {'; '.join(model['reasons'])}" if model.get("reasons") else ""))
    if doc.get("rollback"):
        lines.append(f"rollback: {doc['rollback']['back']}/{doc['rollback']['sent']} device(s) back")
    if doc.get("failures"):
        lines.append(f"failed devices ({doc['failed_total']}):")
        lines += [f"  {f['device']} (wave {f['wave']}): {f['reason']}" for f in doc["failures"][:20]]
    lines.append(time.strftime("as of %H:%M:%S", time.localtime(doc["updated_ms"] / 1000)))
    return "\n".join(lines)
