"""`edgeship fleet simulate --devices N`: rehearse a rollout on a simulated fleet (docs/fleet.md)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from ...errors import BadInputError


def add_simulate_parser(fs, broker_args) -> None:
    s = fs.add_parser("simulate", help="run N simulated devices against the broker (rehearse a rollout)")
    s.add_argument("--devices", type=int, required=True, help="how many devices")
    s.add_argument("--fleet", required=True)
    s.add_argument("--model", required=True, help="the model the devices run")
    s.add_argument("--release", type=int, default=1, help="the release they run at start (default 1)")
    s.add_argument("--root", default=None, help="trusted root.json (operator keys); default KEYS/root.json")
    s.add_argument("--keys", default=None, help="key directory of `edgeship keys init` (for its root.json)")
    s.add_argument("--behaviour", default=None, metavar="TOML", help="behaviour file (toolchain/fleet/sim/behaviour.py)")
    s.add_argument("--gate-fail", action="append", metavar="R=SHARE", help="share of devices whose gate refuses release R")
    s.add_argument("--trial-fail", action="append", metavar="R=SHARE", help="share whose trial rolls release R back")
    s.add_argument("--latency", action="append", metavar="R=FACTOR", help="latency of release R times FACTOR")
    s.add_argument("--error-rate", action="append", metavar="R=RATE", help="error rate of release R")
    s.add_argument("--drift", action="append", metavar="R=SHARE",
                   help="share of devices whose inputs drift on release R (their drift alarm raises); the "
                        "devices publish telemetry/drift as agents with a drift baseline do")
    s.add_argument("--offline", type=float, default=None, metavar="SHARE", help="share of devices offline at start")
    s.add_argument("--churn", type=float, default=None, metavar="SHARE", help="share of devices leaving per minute")
    s.add_argument("--groups", default=None, metavar="G=SHARE,...", help="group shares, e.g. sim=1,canary=0.1")
    s.add_argument("--arch", default=None, metavar="A=SHARE,...", help="architectures, e.g. x86_64=0.5,aarch64=0.5")
    s.add_argument("--metrics-interval", type=float, default=None, help="seconds per metrics window")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    s.add_argument("--devices-per-connection", type=int, default=250)
    s.add_argument("--json", action="store_true", help="print the final summary as JSON")
    broker_args(s)
    s.set_defaults(func=_simulate)


def _pairs(values: list[str] | None, flag: str, *, key=int) -> dict:
    out = {}
    for v in values or []:
        k, _, x = v.partition("=")
        try:
            out[key(k)] = float(x)
        except ValueError:
            raise BadInputError(f"{flag} expects KEY=NUMBER, got {v!r}") from None
    return out


def behaviour_of(args):
    """The behaviour of ``--behaviour`` with the flags on top. Raises BadInputError."""
    from .behaviour import SimBehaviour

    b = SimBehaviour.from_toml(args.behaviour) if args.behaviour else SimBehaviour()
    top = {k: v for k, v in (("offline_share", args.offline), ("churn_per_min", args.churn),
                             ("metrics_interval_s", args.metrics_interval), ("seed", args.seed)) if v is not None}
    for flag, attr in (("groups", "groups"), ("arch", "arch")):
        spec = getattr(args, flag)
        if spec:
            top[attr] = _pairs(spec.split(","), f"--{flag}", key=str)
    if args.drift:
        top["drift_baseline"] = True
    if top:
        b = SimBehaviour.from_mapping({**_fields(b), **top})
    for flag, attr in (("gate_fail", "gate_fail_share"), ("trial_fail", "trial_fail_share"),
                       ("latency", "latency_factor"), ("error_rate", "error_rate"), ("drift", "drift_share")):
        for release, value in _pairs(getattr(args, flag), f"--{flag.replace('_', '-')}").items():
            b = b.with_release(release, **{attr: value})
    return b


def _fields(b) -> dict:
    from dataclasses import asdict, fields

    d = {f.name: getattr(b, f.name) for f in fields(b)}
    d["release"] = {str(r): asdict(rb) for r, rb in b.release.items()}
    return d


def trusted_keys(args):
    """The operator keys the simulated devices trust (as an agent reads them from its root)."""
    from runtime.contracts.mqtt.signing import OperatorKeys

    path = args.root or (str(Path(args.keys) / "root.json") if args.keys else None)
    if path is None:
        raise BadInputError("the simulated devices trust the operator keys of a root.json: pass --root FILE or --keys DIR")
    try:
        return OperatorKeys.from_root(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: not a readable root.json: {e}") from e


def _simulate(args) -> int:
    from ..cliargs import check_fleet, settings
    from .fleet import SimFleet

    check_fleet(args)
    if args.devices < 1:
        raise BadInputError(f"--devices must be >= 1, got {args.devices}")
    sim = SimFleet(n=args.devices, fleet=args.fleet, settings=settings(args), keys=trusted_keys(args),
                   model=args.model, release=args.release, behaviour=behaviour_of(args),
                   devices_per_connection=args.devices_per_connection)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    t0 = time.monotonic()
    sim.start()
    print(f"{args.devices} simulated devices of fleet {args.fleet} on {len(sim.conns)} connection(s) "
          f"({time.monotonic() - t0:.2f} s to start)", file=sys.stderr, flush=True)
    try:
        while not stop and (args.duration is None or time.monotonic() - t0 < args.duration):
            left = 5.0 if args.duration is None else args.duration - (time.monotonic() - t0)
            time.sleep(max(0.05, min(5.0, left)))
            s = sim.summary()
            print(f"{time.strftime('%H:%M:%S')} {s['online']}/{s['devices']} online, {s['updating']} updating, "
                  f"releases {s['by_release']}, {s['published']} sent, {s['received']} received, "
                  f"{s['refused']} refused", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    s = sim.summary()
    print(json.dumps(s, indent=2) if args.json else
          "\n".join([f"devices {s['devices']} ({s['connections']} connections), online at the end {s['online']}",
                     "release  devices"] + [f"r{r:<7} {n}" for r, n in s["by_release"].items()]
                    + [f"messages sent {s['published']} {s['published_by_kind']}, received {s['received']}, "
                       f"refused {s['refused']}"]))
    return 0
