"""`edgeship-agent update`: finish an interrupted update, then (with --model) run one now.

Runs in its own process with its own ``Agent`` on the state dir. When an agent is running
(``edgeship-agent run``), every pointer change made here is followed by SIGHUP to it, so it
serves what the store says (its ``reload_pointers``); the trial then watches this process's
canary requests, not the running agent's traffic (the MQTT control plane runs updates
inside the running agent instead).
"""

from __future__ import annotations

import json
import os
import signal
import sys


def add_parser(sub) -> None:
    from ..config import DEFAULT_CONFIG_PATH

    p = sub.add_parser("update", help="run a signed model update now (and finish an interrupted one)")
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="FILE")
    p.add_argument("--model", help="model name to update (default: only recover an interrupted update)")
    p.add_argument("--release", type=int, default=None, help="this release (default: the newest signed one)")
    p.add_argument("--deployment-id", default=None)
    p.add_argument("--repo", default=None, help="override [update] repository_url (URL or local directory)")
    p.add_argument("--check", action="store_true", help="only report whether a newer release is available")
    p.add_argument("--json", action="store_true", help="print JSON (events one per line, then the result)")
    p.set_defaults(func=cmd_update)


class _HupAgent:
    """Adapter: an Agent whose switches are also signalled to a running agent process."""

    def __init__(self, agent, pid: int | None) -> None:
        self._agent, self._pid = agent, pid

    def __getattr__(self, name):
        return getattr(self._agent, name)

    def _hup(self) -> None:
        if self._pid:
            try:
                os.kill(self._pid, signal.SIGHUP)
            except ProcessLookupError:
                self._pid = None

    def switch_to(self, *a, **kw):
        r = self._agent.switch_to(*a, **kw)
        self._hup()
        return r

    def rollback(self, *a, **kw):
        r = self._agent.rollback(*a, **kw)
        self._hup()
        return r

    def reload_pointers(self):
        r = self._agent.reload_pointers()
        self._hup()
        return r


def cmd_update(args) -> int:
    import dataclasses

    from ..agent import Agent
    from ..config import ConfigError, load_config
    from ..serving.server import running_agent
    from .errors import UpdateError
    from .updater import Updater

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"edgeship-agent update: {e}", file=sys.stderr)
        return 2
    ucfg = cfg.section("update")
    if args.repo:
        ucfg = dataclasses.replace(ucfg, repository_url=args.repo)
    running = running_agent(cfg.state_dir)
    agent = Agent(cfg)
    shell = _HupAgent(agent, running.pid if running else None)
    up = Updater(cfg, agent.store, shell, update_config=ucfg)

    def show(ev) -> None:
        if args.json:
            print(json.dumps(ev.to_json()), flush=True)
        else:
            print(f"{ev.ts}  {ev.state:<12} {ev.reason_code or '':<28} {ev.detail}", flush=True)

    try:
        rec = up.recover(on_event=show)
        res = rec
        if args.check and args.model:
            c = up.check(args.model)
            print(json.dumps({"model": args.model, "available": c.release if c else None}) if args.json
                  else (f"{args.model}: release {c.release} available ({c.target_path})" if c
                        else f"{args.model}: up to date"))
            return 0
        if args.model:
            res = up.update(args.model, release=args.release, deployment_id=args.deployment_id, on_event=show)
    except UpdateError as e:
        print(f"edgeship-agent update: {e} [{e.reason.value}]", file=sys.stderr)
        return 1
    finally:
        agent.close()
    if res is None:
        print(json.dumps({"result": None}) if args.json else "no update to run or recover")
        return 0
    print(json.dumps({"result": res.to_json()}) if args.json else
          f"{res.model}: {res.state.value} ({res.reason.value}) {res.detail}")
    from .states import State

    return 0 if res.state in (State.COMMIT, State.ABORTED) and res.reason.value in ("ok", "release.up_to_date") else 1
