"""`edgeship-agent update`: finish an interrupted update, then (with --model) run one now.

Where the update runs:

- An agent is running on the state dir (``edgeship-agent run``): the command asks it, over
  its token-protected control route ``POST /edgeship/v1/update``, to run the update inside
  the serving process, and prints the events it streams back. The gate, the switch and
  the trial window then happen where the real traffic is. A second update while one runs
  is refused (HTTP 409, exit code 1). The client is :mod:`device_agent.agent.client`.
- No agent is running: the update runs in this process with its own ``Agent``, holding the
  state dir's ``agent.lock`` meanwhile (an ``edgeship-agent run`` started during it refuses
  to start instead of sharing the store).
"""

from __future__ import annotations

import json

from runtime.contracts.control import UpdateRequest


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


def cmd_update(args) -> int:
    """Raises ConfigError, BadArgumentsError, UpdateError, AlreadyRunningError, ControlAPIError."""
    import dataclasses

    from ..agent.errors import AlreadyRunningError
    from ..agent.process import instance_lock, running_agent
    from ..config import load_config

    cfg = load_config(args.config)
    ucfg = cfg.section("update")
    if args.repo:
        ucfg = dataclasses.replace(ucfg, repository_url=args.repo)
    if args.check:
        return _check(args, cfg, ucfg)
    try:
        with instance_lock(cfg.state_dir):
            return _run_here(args, cfg, ucfg)
    except AlreadyRunningError:
        pass  # an agent (or another update) holds the state dir
    running = running_agent(cfg.state_dir)
    if running is None:
        raise AlreadyRunningError(f"{cfg.state_dir}/agent.lock is held by another process (an agent starting, "
                                  f"or another `edgeship-agent update`); try again in a moment")
    return _run_in_agent(args, running)


def _show(args, ev: dict) -> None:
    if args.json:
        print(json.dumps(ev), flush=True)
    else:
        print(f"{ev['ts']}  {ev['state']:<12} {ev.get('reason_code') or '':<28} {ev['detail']}", flush=True)


def _result(args, res: dict | None) -> int:
    if res is None:
        print(json.dumps({"result": None}) if args.json else "no update to run or recover")
        return 0
    print(json.dumps({"result": res}) if args.json else
          f"{res['model']}: {res['state']} ({res['reason']}) {res['detail']}")
    ok = (res["state"], res["reason"]) in (("commit", "ok"), ("aborted", "release.up_to_date"))
    return 0 if ok else 1


def _check(args, cfg, ucfg) -> int:
    from ..errors import BadArgumentsError
    from ..store import Store
    from .updater import Updater

    if not args.model:
        raise BadArgumentsError("--check needs --model")
    # reads the repository only: no agent, no lock
    c = Updater(cfg, Store(cfg.state_dir), None, update_config=ucfg).check(args.model)
    print(json.dumps({"model": args.model, "available": c.release if c else None}) if args.json
          else (f"{args.model}: release {c.release} available ({c.target_path})" if c
                else f"{args.model}: up to date"))
    return 0


def _run_here(args, cfg, ucfg) -> int:
    """No agent is running: recover, then update, in this process (the caller holds the lock)."""
    from ..agent.core import Agent
    from .updater import Updater

    agent = Agent(cfg)
    up = Updater(cfg, agent.store, agent, update_config=ucfg)
    try:
        res = up.recover(on_event=lambda ev: _show(args, ev.to_json()))
        if args.model:
            res = up.update(args.model, release=args.release, deployment_id=args.deployment_id,
                            on_event=lambda ev: _show(args, ev.to_json()))
    finally:
        agent.close()
    return _result(args, res.to_json() if res is not None else None)


def _run_in_agent(args, running) -> int:
    """Ask the running agent to run the update; print the events it streams."""
    from ..agent.client import ControlClient
    from ..agent.errors import ControlAPIError, ControlUnreachableError

    client = ControlClient(running)
    if not args.model:
        print(json.dumps({"result": None, "agent": running.pid}) if args.json else
              f"{client.where} recovers interrupted updates itself at start; nothing to do")
        return 0
    req = UpdateRequest(model=args.model, release=args.release, deployment_id=args.deployment_id,
                        repository_url=args.repo)
    for msg in client.update(req):
        if "event" in msg:
            _show(args, msg["event"])
        elif "result" in msg:
            return _result(args, msg["result"])
        else:
            raise ControlAPIError(f"{client.where}: {msg.get('error')} [{msg.get('reason')}]")
    raise ControlUnreachableError(f"{client.where} closed the stream before the result (see `edgeship-agent "
                                  f"status` and <state_dir>/update/journal.json)")
