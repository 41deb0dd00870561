"""`edgeship rollout start|status|pause|resume|abort|rollback` (docs/fleet.md).

``start`` checks everything before it publishes anything (the plan, the operator key, the
release as a verified signed TUF target, the targets and waves against the fleet's retained
state), then runs the controller in the foreground until the rollout ends: exit 0 when it
completed, 1 when it was aborted or rolled back. ``pause``/``resume``/``abort``/``rollback``
send an operator-signed, retained control message to the controller (applied when one
starts, if none runs); ``resume`` also restarts a controller from its journal when none runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ...errors import BadInputError
from .plan import Action, Criteria
from ..cliargs import broker_args, check_fleet, check_rollout_id, keys_arg, settings, signer_of

CRITERIA_FLAGS = {"bake": ("bake_s", float), "max_bake": ("max_bake_s", float),
                  "install_timeout": ("install_timeout_s", float), "min_success_pct": ("min_success_pct", float),
                  "max_failure_pct": ("max_failure_pct", float), "min_sample": ("min_sample", int),
                  "on_install_failure": ("on_install_failure", str),
                  "max_error_rate_delta": ("max_error_rate_delta", float), "max_p95_ratio": ("max_p95_ratio", float),
                  "max_crash_per_h_delta": ("max_crash_per_h_delta", float), "min_requests": ("min_requests", int),
                  "min_device_s": ("min_device_s", float), "min_windows": ("min_windows", int),
                  "max_drift_alarm_share_delta": ("max_drift_alarm_share_delta", float),
                  "min_drift_devices": ("min_drift_devices", int),
                  "on_model_regression": ("on_model_regression", str)}


def _unit(name: str, typ: type) -> str:
    """The metavar that says a criteria flag's unit."""
    if name.endswith("_s"):
        return "SECONDS"
    if name.endswith("_pct"):
        return "PCT"
    return "N" if typ is int else "X"


def _journal_arg(p) -> None:
    p.add_argument("--journal-dir", default=None, help="controller journals (default $EDGESHIP_ROLLOUTS or "
                                                      "~/.local/state/edgeship/rollouts)")


def add_parser(sub) -> None:
    p = sub.add_parser("rollout", help="staged rollouts: waves, bake times, install and model health, fleet rollback")
    rs = p.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    s = rs.add_parser("start", help="start a rollout and run its controller until it ends")
    s.add_argument("plan", nargs="?", help="rollout plan (TOML); flags override it")
    s.add_argument("--id", default=None, help="the rollout's name (default <model>-r<release>-<UTC time>, printed)")
    s.add_argument("--fleet", default=None, help="fleet (required here or in the plan)")
    s.add_argument("--model", default=None, help="model name of the release (required here or in the plan)")
    s.add_argument("--release", type=int, default=None, help="release number (required here or in the plan)")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--group", default=None, help="target the devices of this group")
    who.add_argument("--device", action="append", default=None, help="a target device (repeat)")
    who.add_argument("--select", action="append", default=None, metavar="K=V",
                     help="target devices whose reported K is V (arch, engine, group, model, release, ...)")
    s.add_argument("--waves", default=None, metavar="SIZES", help="comma-separated wave sizes, e.g. 1,10%%,rest")
    s.add_argument("--concurrency", type=int, default=None, help="devices updating at once, at most (default 50)")
    for flag, (name, typ) in CRITERIA_FLAGS.items():
        default = getattr(Criteria(), name)
        # the plan validates the values (one message for flags and TOML alike)
        metavar = "|".join(a.value for a in Action) if name.startswith("on_") else _unit(name, typ)
        s.add_argument("--" + flag.replace("_", "-"), type=typ, default=None, dest=f"c_{name}",
                       help=f"criteria {name} of every wave (default {getattr(default, 'value', default)}; "
                            "docs/fleet.md)", metavar=metavar)
    s.add_argument("--repo", required=True, help="TUF repository the release was published to")
    s.add_argument("--root", default=None, help="trusted root.json (default the repository's 1.root.json)")
    s.add_argument("--dry-run", action="store_true", help="print who would get what, wave by wave; publish nothing")
    s.add_argument("--json", action="store_true")
    for q in (s,):
        keys_arg(q)
        _journal_arg(q)
        broker_args(q)
    s.set_defaults(func=_start)
    st = rs.add_parser("status", help="waves, per-wave counts, the criteria values, failed devices")
    st.add_argument("id")
    st.add_argument("--fleet", required=True)
    st.add_argument("--json", action="store_true")
    _journal_arg(st)
    broker_args(st)
    st.set_defaults(func=_status)
    for action, text in (("pause", "stop assigning devices (the running ones finish)"),
                         ("resume", "continue a paused rollout (or restart its controller from the journal)"),
                         ("abort", "stop for good; devices not yet moved get nothing"),
                         ("rollback", "abort, and move the devices already moved back to their release")):
        a = rs.add_parser(action, help=text)
        a.add_argument("id")
        a.add_argument("--fleet", required=True)
        a.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the controller to confirm")
        keys_arg(a)
        _journal_arg(a)
        broker_args(a)
        a.set_defaults(func=_control, action=action)


def _flags(args) -> dict:
    target = None
    if args.group:
        target = {"group": args.group}
    elif args.device:
        target = {"devices": args.device}
    elif args.select:
        sel = {}
        for kv in args.select:
            k, _, v = kv.partition("=")
            if not k or not v:
                raise BadInputError(f"--select expects K=V, got {kv!r}")
            sel[k] = v
        target = {"select": sel}
    crit = {name: getattr(args, f"c_{name}") for name, _ in CRITERIA_FLAGS.values() if getattr(args, f"c_{name}") is not None}
    return {"id": args.id, "fleet": args.fleet, "model": args.model, "release": args.release,
            "concurrency": args.concurrency, "target": target, "criteria": crit,
            "waves": [w.strip() for w in args.waves.split(",")] if args.waves else None}


def _operator_keys(args):
    from runtime.contracts.mqtt.signing import OperatorKeys

    try:
        return OperatorKeys.from_root(json.loads((Path(args.keys) / "root.json").read_text()))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{args.keys}/root.json: cannot read the operator keys: {e}") from e


def _journal(args, rid: str):
    from .journal import Journal, default_dir

    return Journal(args.journal_dir or default_dir(), rid)


def _start(args) -> int:
    from ..client import FleetClient
    from ..releases import find_release
    from .cohort import assign_waves, resolve_targets
    from .machine import RolloutState
    from .plan import load

    plan = load(args.plan, _flags(args))      # names checked there (fleet, model, id)
    signer = signer_of(args)
    journal = _journal(args, plan.id)
    if journal.exists() and not args.dry_run:
        raise BadInputError(f"rollout {plan.id!r} already has a journal in {journal.dir}; "
                            f"`edgeship rollout resume {plan.id} --fleet {plan.fleet}` continues it")
    rel = find_release(args.repo, model=plan.model, release=plan.release, root_file=args.root)
    with FleetClient(settings(args)) as fc:
        views = fc.snapshot(plan.fleet)
    targets = resolve_targets(plan, views)
    waves = assign_waves(plan, targets)
    offline = [d for d in targets if not (views[d].status or {}).get("online")]
    if args.dry_run:
        return _print_dry_run(args, plan, waves, views, rel, offline)
    if offline:
        print(f"warning: {len(offline)} target device(s) are offline ({', '.join(offline[:10])}"
              f"{', ...' if len(offline) > 10 else ''}): they get the rollout's desired state when they return, "
              f"and count as failures if that is after install_timeout_s", file=sys.stderr)
    st = RolloutState(plan=plan, waves=waves)
    journal.save(st)
    return _run(args, st, journal, signer)


def _run(args, st, journal, signer) -> int:
    from .controller import Controller
    from .machine import Status
    from .status import render, summary

    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else \
        (lambda line: print(line, flush=True))
    end = Controller(st, journal=journal, settings=settings(args), signer=signer, operator_keys=_operator_keys(args),
                     say=say).run()
    doc = summary(end, None, int(time.time() * 1000))
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0 if end.status is Status.COMPLETED else 1


def _print_dry_run(args, plan, waves, views, rel, offline) -> int:
    rows = []
    for i, devices in enumerate(waves, 1):
        for d in devices:
            a = (views[d].reported or {}).get("active") or (views[d].status or {}).get("active") or {}
            rows.append({"wave": i, "device": d, "from": f"{a.get('name', '?')} r{a.get('release', '?')}",
                         "to": f"{plan.model} r{plan.release}", "online": d not in offline})
    if args.json:
        print(json.dumps({"id": plan.id, "plan": plan.to_json(), "target": rel.target_path, "assignments": rows},
                         indent=2))
        return 0
    print(f"dry run of rollout {plan.id}: {plan.model} r{plan.release} ({rel.target_path}) to {plan.target.describe()} "
          f"of fleet {plan.fleet}: {sum(map(len, waves))} device(s) in {len(waves)} wave(s); nothing is published")
    for i, devices in enumerate(waves, 1):
        c = plan.waves[i - 1].criteria
        print(f"wave {i} ({plan.waves[i - 1].size}: {len(devices)} device(s); bake {c.bake_s:g} s, advance at "
              f">= {c.min_success_pct:g}% committed, {c.on_install_failure.value} at {c.max_failure_pct:g}% failures)")
        for r in rows:
            if r["wave"] == i:
                print(f"  {r['device']}: {r['from']} -> {r['to']}" + ("" if r["online"] else "  (offline)"))
    return 0


def _status(args) -> int:
    from runtime.contracts.mqtt.topics import rollout_topic

    from ..client import FleetClient
    from ..errors import RolloutNotFoundError
    from .status import render, summary

    check_fleet(args)
    check_rollout_id(args)
    doc = None
    with FleetClient(settings(args)) as fc:
        topic = rollout_topic(fleet=args.fleet, rollout=args.id, leaf="state", prefix=args.prefix)
        fc.subscribe(topic)
        for m in fc.messages(timeout_s=2.0, idle_s=0.5):
            if m.topic == topic and m.payload:
                doc = m.json()
    if doc is None:
        journal = _journal(args, args.id)
        if not journal.exists():
            raise RolloutNotFoundError(f"no rollout {args.id!r} in fleet {args.fleet!r}: nothing retained on "
                                       f"{topic} and no journal in {journal.dir.parent}")
        doc = summary(journal.load(), None, int(time.time() * 1000))
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0


def _control(args) -> int:
    from runtime.contracts.mqtt.signing import Addressee
    from runtime.contracts.mqtt.topics import rollout_topic

    from ..client import FleetClient
    from .controller import CONTROL_SCHEMA

    check_fleet(args)
    check_rollout_id(args)
    signer = signer_of(args)
    raw = signer.sign_schema(schema=CONTROL_SCHEMA, leaf="control", to=Addressee(args.fleet, rollout=args.id),
                             body={"action": args.action}, expires_s=7 * 86400)
    claim = None
    with FleetClient(settings(args), signer=signer) as fc:
        ctopic = rollout_topic(fleet=args.fleet, rollout=args.id, leaf="claim", prefix=args.prefix)
        fc.subscribe(ctopic)
        for m in fc.messages(timeout_s=1.5, idle_s=0.5):
            if m.topic == ctopic and m.payload:
                claim = m.json()
        fc.publish(rollout_topic(fleet=args.fleet, rollout=args.id, leaf="control", prefix=args.prefix), raw,
                   retain=True)
    running = bool(claim) and time.time() * 1000 - (claim.get("heartbeat_ms") or 0) < 30_000
    if running:
        print(f"{args.action} sent to the controller of rollout {args.id} ({claim.get('owner')})")
        return 0
    journal = _journal(args, args.id)
    if args.action == "resume" and journal.exists():
        print(f"no controller runs rollout {args.id}: resuming it from {journal.path}", flush=True)
        args.json = False
        return _run(args, journal.load(), journal, signer)
    print(f"{args.action} sent (retained); no controller runs rollout {args.id} now: it applies when one starts "
          f"(`edgeship rollout resume {args.id} --fleet {args.fleet}` where its journal is)")
    return 0
