"""`edgeship push` and `edgeship fleet {status,watch,command,forget}` (docs/mqtt.md); `exporter`, `drift`
and `profile` are added by :mod:`.monitor_cli` (docs/monitoring.md).

Errors are raised (``runtime.cliutil.run`` reports them): a bad flag, fleet or device name
is a BadInputError (exit 2), a broker, repository or fleet problem a FleetError (exit 1).
"""

from __future__ import annotations

import getpass
import json
import sys
import time

from runtime.contracts.mqtt.topics import device_topics, fleet_filter, split_device_topic

from ..errors import BadInputError
from .errors import FleetError


from .cliargs import broker_args as _broker_args, check_fleet as _check_fleet, keys_arg as _keys_arg
from .cliargs import settings as _settings, signer_of, topics as _topics


def add_push_parser(sub) -> None:
    p = sub.add_parser("push", help="deploy a published model release to a device or a group over MQTT")
    p.add_argument("--fleet", required=True)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", help="one device id")
    who.add_argument("--group", help="every device whose status lists this group ([mqtt] groups)")
    p.add_argument("--model", required=True)
    p.add_argument("--release", type=int, required=True)
    p.add_argument("--repo", required=True, help="TUF repository directory or URL the release was published to")
    p.add_argument("--root", help="trusted root.json (default: the repository's metadata/1.root.json)")
    p.add_argument("--wait", action="store_true", help="follow the deployment; exit 0 only if every device commits")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _keys_arg(p)
    _broker_args(p)
    p.set_defaults(func=_push)


def add_fleet_parser(sub) -> None:
    p = sub.add_parser("fleet", help="fleet state from the MQTT broker")
    fs = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND")
    st = fs.add_parser("status", help="one row per device: online, active model, last deployment, last seen")
    st.add_argument("--fleet", required=True)
    st.add_argument("--json", action="store_true")
    _broker_args(st)
    st.set_defaults(func=_status)
    w = fs.add_parser("watch", help="print deployment events and alarms as they arrive")
    w.add_argument("--fleet", required=True)
    w.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    w.add_argument("--json", action="store_true", help="one JSON object per line")
    _broker_args(w)
    w.set_defaults(func=_watch)
    c = fs.add_parser("command", help="send rollback / rebirth / cancel / retry to one device and print its answer")
    c.add_argument("name", choices=["rollback", "rebirth", "cancel", "retry"])
    c.add_argument("--fleet", required=True)
    c.add_argument("--device", required=True)
    c.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    c.add_argument("--expiry", type=int, default=60, help="MQTT message expiry of the command, seconds")
    c.add_argument("--release", type=int, default=None,
                   help="retry: the release to take out of the device's penalty box")
    c.add_argument("--model", default=None, help="retry: the model of --release (default: the active one)")
    c.add_argument("--json", action="store_true")
    _keys_arg(c)
    _broker_args(c)
    c.set_defaults(func=_command)
    f = fs.add_parser("forget", help="clear a device's retained topics (ghost rows of a misspelled push "
                                     "or a decommissioned device)")
    f.add_argument("--fleet", required=True)
    f.add_argument("--device", required=True)
    f.add_argument("--yes", action="store_true", help="really clear (without it: list what would be cleared)")
    f.add_argument("--force", action="store_true", help="clear even though the device reports itself online")
    _broker_args(f)
    f.set_defaults(func=_forget)
    from .sim.cli import add_simulate_parser

    add_simulate_parser(fs, _broker_args)
    from .capture.cli import add_capture_parser

    add_capture_parser(fs, _broker_args, _keys_arg)
    from .monitor_cli import add_parsers

    add_parsers(fs)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _command(args) -> int:
    from .client import FleetClient

    _topics(args, args.device)
    body = {}
    if args.name == "retry":
        if args.release is None:
            raise BadInputError("fleet command retry needs --release N (the release to take out of the penalty box)")
        body = {"release": args.release, **({"model": args.model} if args.model else {})}
    signer = signer_of(args)
    with FleetClient(_settings(args), signer=signer) as fc:
        resp = fc.command(args.fleet, args.device, args.name, body, timeout_s=args.timeout, expiry_s=args.expiry)
    if args.json:
        print(json.dumps(resp, indent=2))
    else:
        verdict = "ok" if resp.get("ok") else f"refused ({resp.get('reason_code')})"
        print(f"{args.device}: {args.name} {verdict}: {resp.get('detail')}")
        for key, value in (resp.get("result") or {}).items():
            print(f"  {key}: {json.dumps(value)}")
    return 0 if resp.get("ok") else 1


def _forget(args) -> int:
    from .client import FleetClient

    t = _topics(args, args.device)
    with FleetClient(_settings(args)) as fc:
        found = fc.retained(args.fleet, args.device)
        status = found[t.status].json() if t.status in found else None
        if not found:
            raise FleetError(f"nothing retained for device {args.device!r} of fleet {args.fleet!r} on "
                             f"{args.broker} (check the spelling: `edgeship fleet status --fleet {args.fleet}` "
                             f"lists the devices)")
        topics = sorted(found)
        if isinstance(status, dict) and status.get("online") and not args.force:
            raise FleetError(f"{args.fleet}/{args.device} reports itself online: its agent republishes status "
                             "and reported on every connect and heartbeat. Stop the agent first, or pass --force")
        if not args.yes:
            print(f"would clear {len(topics)} retained topic(s):\n  " + "\n  ".join(topics))
            raise BadInputError("refusing without --yes (nothing was changed)")
        fc.clear_retained(topics)
    print(f"cleared {len(topics)} retained topic(s) of {args.fleet}/{args.device}:\n  " + "\n  ".join(topics))
    return 0


def _push(args) -> int:
    from . import plan
    from .client import FleetClient
    from .releases import find_release

    if args.device:
        _topics(args, args.device)
    else:
        _check_fleet(args)
    signer = signer_of(args)
    rel = find_release(args.repo, model=args.model, release=args.release, root_file=args.root)
    with FleetClient(_settings(args), signer=signer) as fc:
        views = fc.snapshot(args.fleet)
        devices = plan.select_devices(views, device=args.device, group=args.group)
        offline = plan.offline_devices(views, devices)
        if offline:
            print(f"warning: {len(offline)} of the {len(devices)} targeted device(s) report themselves offline "
                  f"({', '.join(offline[:10])}{', ...' if len(offline) > 10 else ''}): they get this desired "
                  f"state when they reconnect", file=sys.stderr)
        dep = plan.new_deployment_id()
        wait = plan.WaitState.start(dep, devices)
        if args.wait:
            tops = [device_topics(fleet=args.fleet, device=d, prefix=args.prefix) for d in devices]
            fc.subscribe(*(t.deploy(dep) for t in tops), *(t.reported for t in tops))
        issued_by = f"{getpass.getuser()}@edgeship-push"
        for d in devices:
            desired = plan.desired_for(views.get(d), deployment_id=dep, model=args.model,
                                       release=args.release, issued_by=issued_by)
            fc.publish_desired(args.fleet, d, desired)
            if not args.json:
                seen = "" if d in views else " (device not seen yet; it converges when it connects)"
                print(f"{d}: desired v{desired.version} -> {args.model} r{args.release} "
                      f"({rel.target_path}, sha256 {rel.sha256[:12]}) deployment {dep}{seen}")
        if not args.wait:
            if args.json:
                print(json.dumps({"deployment_id": dep, "devices": devices, "waited": False}))
            return 0
        _follow(fc, args, wait)
    if args.json:
        print(json.dumps({"deployment_id": dep, "devices": devices, "waited": True,
                          "succeeded": wait.succeeded, "outcome": wait.outcome}, indent=2))
    if wait.succeeded:
        if not args.json:
            print(f"deployment {dep}: committed on {len(devices)} device(s)")
        return 0
    print(f"deployment {dep} did not commit everywhere:\n  " + "\n  ".join(wait.failures()), file=sys.stderr)
    return 1


def _follow(fc, args, wait) -> None:
    for msg in fc.messages(timeout_s=args.timeout):
        parts = split_device_topic(msg.topic, prefix=args.prefix)
        doc = msg.json()
        if parts is None or not isinstance(doc, dict):
            continue
        _, device, leaf = parts
        if leaf.startswith("deploy/") and doc.get("deployment_id") == wait.deployment_id and not args.json:
            code = f" [{doc['reason_code']}]" if doc.get("reason_code") else ""
            print(f"  {device}: {doc.get('state')}{code} {doc.get('detail') or ''}".rstrip(), flush=True)
        wait.feed(device, leaf, doc)
        if wait.done:
            return


def _status(args) -> int:
    from . import plan
    from .client import FleetClient

    _check_fleet(args)
    with FleetClient(_settings(args)) as fc:
        views = fc.snapshot(args.fleet)
    rows = plan.status_rows(views)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no device of fleet {args.fleet!r} has published a status on {args.broker}")
    else:
        print(plan.render_table(rows))
    return 0


def format_watch_line(device: str, leaf: str, doc: dict) -> str:
    ts = time.strftime("%H:%M:%S", time.localtime((doc.get("ts_ms") or 0) / 1000))
    hist = " (replayed)" if doc.get("hist") else ""
    if leaf.startswith("deploy/"):
        code = f" [{doc['reason_code']}]" if doc.get("reason_code") else ""
        return (f"{ts} {device} deploy {doc.get('deployment_id')} {doc.get('model')} r{doc.get('release')}: "
                f"{doc.get('state')}{code} {doc.get('detail') or ''}{hist}").rstrip()
    if leaf == "events":
        return (f"{ts} {device} {str(doc.get('severity', '')).upper()} {doc.get('category')} "
                f"{doc.get('reason_code')}: {doc.get('detail')}{hist}")
    if not doc.get("online"):
        return f"{ts} {device} OFFLINE ({doc.get('reason')})"
    active = doc.get("active") or {}
    return f"{ts} {device} online, active {active.get('name', '-')} r{active.get('release', '-')}"


def _watch(args) -> int:
    import signal

    from .client import FleetClient

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly under a supervisor too

    _check_fleet(args)
    with FleetClient(_settings(args)) as fc:
        fc.subscribe(*(fleet_filter(fleet=args.fleet, leaf=leaf, prefix=args.prefix)
                       for leaf in ("deploy/+", "events", "status")))
        timeout = args.timeout if args.timeout is not None else float("inf")
        try:
            for msg in fc.messages(timeout_s=timeout):
                parts = split_device_topic(msg.topic, prefix=args.prefix)
                doc = msg.json()
                if parts is None or not isinstance(doc, dict) or (parts[2] == "status" and msg.retain):
                    continue
                print(json.dumps({"topic": msg.topic, **doc}) if args.json
                      else format_watch_line(parts[1], parts[2], doc), flush=True)
        except KeyboardInterrupt:
            pass
    return 0
