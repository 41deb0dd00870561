"""`edgeship-agent status | rollback | run` (install is in device_agent.install).

``status`` and ``rollback`` work on a stopped agent by reading/switching the store's pointers,
and on a running one through its local control endpoint (:mod:`device_agent.agent.client`),
so the running server switches sessions too (it finds the agent by the flock on
``<state_dir>/agent.lock``). Errors are raised, not printed: ``runtime.cliutil.run`` reports
them and exits with their code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.cliutil import human_bytes
from runtime.contracts.statedir import StateDir

from .config import DEFAULT_CONFIG_PATH, load_config
from .errors import StateDirNotFoundError


def _state_dir(args) -> Path:
    """The state dir of --state-dir or the config. Raises ConfigError."""
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    return load_config(args.config).state_dir


def _common(p) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                   help=f"agent config (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--state-dir", default=None, metavar="DIR", help="use this state dir instead of the config's")


# --------------------------------------------------------------------------- status
def add_status(sub) -> None:
    p = sub.add_parser("status", help="show the active and previous model (and the running agent)")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from .agent.client import ControlClient
    from .agent.errors import ControlAPIError
    from .agent.process import running_agent
    from .store import Store

    root = _state_dir(args)
    if not root.exists():
        raise StateDirNotFoundError(f"state dir {root} does not exist (run `edgeship-agent install`)")
    store = Store(root)
    running = running_agent(root)
    out: dict[str, Any] = {
        "state_dir": str(root),
        "running": None if running is None else {"pid": running.pid, "url": running.url},
        "active": (a.to_json() if (a := store.active()) else None),
        "previous": (p.to_json() if (p := store.previous()) else None),
        "models": [m.to_json() for m in store.models()],
        "update": _last_update(root),
    }
    if running is not None and running.token is not None:
        try:
            live = ControlClient(running).status(timeout_s=5)
            out["serving"], out["ready"], out["metrics"] = live.get("serving"), live.get("ready"), live.get("metrics")
            out["capture"], out["drift"] = live.get("capture"), live.get("drift")
        except ControlAPIError as e:
            out["control_error"] = str(e)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(_status_text(out, running))
    return 0


def _status_text(out: dict[str, Any], running) -> str:
    lines = [f"state dir  {out['state_dir']}",
             "agent      " + (f"running (pid {running.pid}, {running.url})" if running else "not running")]
    for key in ("active", "previous"):
        lines.append(f"{key:<10} {_ref_line(out[key])}")
    if "serving" in out and out["serving"] and out["active"] and out["serving"]["sha256"] != out["active"]["sha256"]:
        lines.append(f"serving    {_ref_line(out['serving'])}  (differs from the active pointer)")
    if out.get("metrics"):
        m = out["metrics"]
        lines.append(f"requests   {m['requests']} in the last {m['window_s']:.0f} s, {m['errors']} errors, "
                     f"p50 {m['latency_ms_p50'] or 0:.2f} ms")
    if out.get("drift"):
        lines.append(f"drift      {_drift_line(out['drift'])}")
    if out.get("capture"):
        lines.append(f"capture    {_capture_line(out['capture'])}")
    lines.append(f"models     {len(out['models'])} in the store")
    u = out["update"]
    if u is not None:
        lines.append("update     " + (u["error"] if "error" in u else
                                      f"{u['model']} release {u['release'] or '?'}: {u['state']}"
                                      + (f" ({u['reason']})" if u["reason"] else "") + f" at {u['updated_utc']}"
                                      + (f"  {u['detail']}" if u["detail"] else "")))
    return "\n".join(lines)


def _drift_line(d: dict[str, Any]) -> str:
    """``12 checks, window 500 samples, no alarm (worst PSI 0.031 on input 'image'); every request
    sketched, a check every 100 requests`` (+ the cost with a budget)."""
    if d.get("no_baseline"):
        return ("not monitored: the served bundle has no drift baseline (a version-1 bundle, or one "
                "packaged from too little data); repackage it to have its inputs checked")
    w, s = d.get("worst"), d.get("schedule") or {}
    judged = d.get("window_samples", 0) >= d.get("judged_from_samples", 0)
    alarms = d.get("alarms") or []
    # an alarm stays active while the window is under min_samples (slow traffic): never hidden
    state = f"{len(alarms)} alarm(s): {', '.join(alarms)}" if alarms else "no alarm" if judged else "not judged yet"
    line = f"{d.get('checks', 0)} checks, window {d.get('window_samples', 0)} samples, {state}"
    if w is not None:
        line += f" (worst PSI {w['psi']:.3f} on {w['kind']} {w['name']!r})"
    k = s.get("sample_every_requests", 1)
    line += (f"; {'every request' if k == 1 else f'1 request in {k}'} sketched, a check every "
             f"{s.get('check_every_requests', '?')} requests")
    if s.get("max_cost_share"):
        cost = s.get("cost_share")
        line += (f", cost {cost:.2%} of inference at the last check" if cost is not None  # before a re-plan it made
                 else ", cost not measured yet") + f" (budget {100 * s['max_cost_share']:g}%)"
    if d.get("skipped_requests"):
        line += f", {d['skipped_requests']} skipped"
    return line


def _capture_line(c: dict[str, Any]) -> str:
    """``12 held (1.2 MiB of 256.0 MiB), 40 stored, 3 dropped (queue_full 3), 1 refused (disk_budget 1), ...``"""
    counters, st = c.get("counters") or {}, c.get("store") or {}
    refused = {k: n for k, n in (st.get("refused") or {}).items() if n}
    dropped = {k.split(".", 1)[1]: n for k, n in counters.items()  # the store's refusals are shown apart
               if k.startswith("dropped.") and n and k.split(".", 1)[1] not in refused}

    def part(what: str, by: dict) -> str:
        return f"{sum(by.values())} {what}" + (f" ({', '.join(f'{k} {n}' for k, n in sorted(by.items()))})"
                                               if by else "")

    line = (f"{st.get('captures', 0)} held ({human_bytes(st.get('bytes', 0))} of "
            f"{human_bytes(st.get('disk_budget_bytes', 0))}), {counters.get('stored', 0)} stored, {part('dropped', dropped)}, "
            f"{part('refused', refused)}, {c.get('queued', 0)} queued")
    problems = [*(c.get("clamped") or []), *(c.get("invalid") or [])]
    return line + "".join(f"\n           ! {p}" for p in problems)


def _last_update(root: Path) -> dict[str, Any] | None:
    """The last (or running) OTA update from ``<state_dir>/update/journal.json``, or None."""
    path = StateDir(root).journal
    try:
        j = json.loads(path.read_text())
        return {k: j.get(k) for k in ("deployment_id", "model", "release", "state", "reason", "detail",
                                      "updated_utc")}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as e:
        return {"error": f"{path}: unreadable update journal: {e}"}


def _ref_line(ref: dict | None) -> str:
    if ref is None:
        return "-"
    return (f"{ref['name']} {ref['version']} (release {ref['release']}, {ref['engine']} {ref['precision']})"
            f"  sha256 {ref['sha256']}")


# ------------------------------------------------------------------------- rollback
def add_rollback(sub) -> None:
    p = sub.add_parser("rollback", help="make the previous model active again")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rollback)


def cmd_rollback(args) -> int:
    from .agent.client import ControlClient
    from .agent.process import running_agent
    from .store import Store

    root = _state_dir(args)
    running = running_agent(root)
    switch_s = None
    if running is not None:
        answer = ControlClient(running).rollback()
        ref, switch_s = answer["active"], answer["switch_s"]
        how = f"running agent pid {running.pid} switched sessions in {switch_s:.3f} s"
    else:
        ref = Store(root).rollback().to_json()
        how = "agent not running; pointers switched"
    if args.json:
        print(json.dumps({"active": ref, "how": how, "switch_s": switch_s}, indent=2))
    else:
        print(f"active     {_ref_line(ref)}\n           ({how})")
    return 0


# ------------------------------------------------------------------------------ run
def add_run(sub) -> None:
    p = sub.add_parser("run", help="serve the active model in the foreground (SIGTERM stops it)")
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                   help=f"agent config (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--port", type=int, default=None, help="override serving.port")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    import dataclasses

    from .serving.server import run

    cfg = load_config(args.config)
    if args.port is not None:
        cfg = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, port=args.port))
    return run(cfg)
