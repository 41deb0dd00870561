"""`edgeship-agent status | rollback | run` (install is in device_agent.install).

``status`` and ``rollback`` work on a stopped agent by reading/switching the store's pointers,
and on a running one through its local control endpoint, so the running server switches
sessions too (it finds the agent by the flock on ``<state_dir>/agent.lock``).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from runtime.contracts.statedir import StateDir

from .config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config


def load_config_or_report(path: str | Path, *, command: str) -> AgentConfig | None:
    """The config at ``path``, or None after printing ``edgeship-agent <command>: <error>``
    to stderr (a config error is the caller's exit code 2)."""
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"edgeship-agent {command}: {e}", file=sys.stderr)
        return None


def _state_dir(args) -> Path:
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    return load_config(args.config).state_dir


def _common(p) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                   help=f"agent config (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--state-dir", default=None, metavar="DIR", help="use this state dir instead of the config's")


def _control(agent, method: str, path: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Call a running agent's control endpoint. Raises RuntimeError with its message."""
    if agent.token is None:
        raise RuntimeError("the agent is running but its control.token is not readable by this user "
                           "(run as the agent's user or root)")
    req = urllib.request.Request(agent.url + path, method=method, data=b"" if method == "POST" else None,
                                 headers={"X-Edgeship-Token": agent.token})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", "")
        except ValueError:
            msg = ""
        raise RuntimeError(f"agent answered {e.code}: {msg}") from e
    except urllib.error.URLError as e:
        raise RuntimeError(f"cannot reach the agent at {agent.url}: {e.reason}") from e


# --------------------------------------------------------------------------- status
def add_status(sub) -> None:
    p = sub.add_parser("status", help="show the active and previous model (and the running agent)")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from .agent.process import running_agent
    from .store import Store, StoreError

    try:
        root = _state_dir(args)
        store = Store(root) if root.exists() else None
    except (ConfigError, StoreError, OSError) as e:
        print(f"edgeship-agent status: {e}", file=sys.stderr)
        return 2
    if store is None:
        print(f"edgeship-agent status: state dir {root} does not exist (run `edgeship-agent install`)",
              file=sys.stderr)
        return 2
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
            live = _control(running, "GET", "/edgeship/v1/status", timeout_s=5)
            out["serving"], out["ready"], out["metrics"] = live.get("serving"), live.get("ready"), live.get("metrics")
        except RuntimeError as e:
            out["control_error"] = str(e)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"state dir  {root}")
    print("agent      " + (f"running (pid {running.pid}, {running.url})" if running else "not running"))
    for key in ("active", "previous"):
        print(f"{key:<10} {_ref_line(out[key])}")
    if "serving" in out and out["serving"] and out["active"] and out["serving"]["sha256"] != out["active"]["sha256"]:
        print(f"serving    {_ref_line(out['serving'])}  (differs from the active pointer)")
    if out.get("metrics"):
        m = out["metrics"]
        print(f"requests   {m['requests']} in the last {m['window_s']:.0f} s, {m['errors']} errors, "
              f"p50 {m['latency_ms_p50'] or 0:.2f} ms")
    print(f"models     {len(out['models'])} in the store")
    u = out["update"]
    if u is not None:
        print("update     " + (u["error"] if "error" in u else
                              f"{u['model']} release {u['release'] or '?'}: {u['state']}"
                              + (f" ({u['reason']})" if u["reason"] else "") + f" at {u['updated_utc']}"
                              + (f"  {u['detail']}" if u["detail"] else "")))
    return 0


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
    from .agent.process import running_agent
    from .store import NoPreviousModelError, Store, StoreError

    try:
        root = _state_dir(args)
    except ConfigError as e:
        print(f"edgeship-agent rollback: {e}", file=sys.stderr)
        return 2
    running = running_agent(root)
    try:
        if running is not None:
            answer = _control(running, "POST", "/edgeship/v1/rollback")
            ref = answer["active"]
            how = f"running agent pid {running.pid} switched sessions in {answer['switch_s']:.3f} s"
        else:
            ref = Store(root).rollback().to_json()
            how = "agent not running; pointers switched"
    except (RuntimeError, NoPreviousModelError, StoreError, OSError) as e:
        print(f"edgeship-agent rollback: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"active": ref, "how": how,
                          "switch_s": answer["switch_s"] if running is not None else None}, indent=2))
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

    from .agent.errors import AlreadyRunningError
    from .serving.server import run

    cfg = load_config_or_report(args.config, command="run")
    if cfg is None:
        return 2
    if args.port is not None:
        cfg = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, port=args.port))
    try:
        return run(cfg)
    except (AlreadyRunningError, OSError) as e:
        print(f"edgeship-agent run: {e}", file=sys.stderr)
        return 1
