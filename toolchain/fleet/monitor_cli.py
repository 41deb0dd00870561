"""`edgeship fleet exporter` and `edgeship fleet drift` (docs/monitoring.md).

Errors are raised (``runtime.cliutil.run`` reports them): a bad flag or name is a
BadInputError (exit 2), a broker problem a FleetError (exit 1).
"""

from __future__ import annotations

import json
import sys
import time


def add_parsers(fs) -> None:
    """Add ``exporter``, ``drift`` and ``profile`` to the ``fleet`` subcommands."""
    from .cliargs import broker_args, keys_arg
    e = fs.add_parser("exporter", help="serve the fleet's MQTT telemetry as Prometheus metrics (one scrape target)")
    e.add_argument("--fleet", action="append", default=None, help="only this fleet (repeatable; default: every fleet)")
    e.add_argument("--host", default="127.0.0.1", help="address to serve /metrics on (default %(default)s)")
    e.add_argument("--port", type=int, default=9108, help="port to serve /metrics on (default %(default)s)")
    e.add_argument("--stale-after-s", type=float, default=300.0,
                   help="forget a device silent for this long (its series disappear; default %(default)s)")
    e.add_argument("--max-devices", type=int, default=20_000, help="devices kept at most (default %(default)s)")
    e.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until "
                                                                "SIGTERM/SIGINT)")
    broker_args(e)
    e.set_defaults(func=_exporter)
    d = fs.add_parser("drift", help="drift scores per device and per release (the devices' retained telemetry/drift)")
    d.add_argument("--fleet", required=True)
    d.add_argument("--json", action="store_true")
    broker_args(d)
    d.set_defaults(func=_drift)
    p = fs.add_parser("profile", help="measure a model on the device itself (the bench's loop, serving goes on); "
                                      "the result reads like a local `edgeship bench` result")
    p.add_argument("--fleet", required=True)
    p.add_argument("--device", required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="a model name on the device (default: the active model)")
    which.add_argument("--bundle", metavar="FILE", help="the bundle file whose model to profile (by its sha256; "
                                                        "it must be on the device)")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (default 1)")
    p.add_argument("--preset", default="quick", choices=["quick", "standard", "long"])
    p.add_argument("--min-iters", type=int, default=None, help="override the preset's minimum runs")
    p.add_argument("--min-duration", type=float, default=None, help="override the preset's minimum seconds")
    p.add_argument("--warmup-s", type=float, default=None, help="override the preset's warm-up seconds")
    p.add_argument("-o", "--out", default=None, help="output directory (default ./profile-<device>)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the result")
    p.add_argument("--json", action="store_true")
    keys_arg(p)
    broker_args(p)
    p.set_defaults(func=_profile)


def _exporter(args) -> int:
    import signal

    from ..errors import BadInputError
    from .cliargs import settings, topics
    from .exporter import Exporter

    for f in args.fleet or []:
        topics(argparse_ns(args, f), "any-device")
    if args.stale_after_s <= 0 or args.max_devices < 1 or not 0 <= args.port <= 65535:
        raise BadInputError("--stale-after-s must be > 0, --max-devices >= 1 and --port a TCP port")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        exp = Exporter(settings(args), fleets=args.fleet, host=args.host, port=args.port,
                       stale_after_s=args.stale_after_s, max_devices=args.max_devices)
    except OSError as e:
        raise BadInputError(f"cannot serve on {args.host}:{args.port}: {e}") from e
    print(f"edgeship fleet exporter: http://{args.host}:{exp.port}/metrics  (broker {args.broker}, "
          f"fleets {', '.join(args.fleet) if args.fleet else 'all'})", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    try:
        while not stop and time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        exp.stop()
    return 0


def argparse_ns(args, fleet: str):
    import argparse

    return argparse.Namespace(**{**vars(args), "fleet": fleet})


def _drift(args) -> int:
    from runtime.contracts.errors import PayloadRejected
    from runtime.contracts.mqtt.telemetry import parse_drift
    from runtime.contracts.mqtt.topics import fleet_filter, split_device_topic

    from .cliargs import check_fleet, settings
    from .client import FleetClient

    check_fleet(args)
    docs, bad = {}, []
    with FleetClient(settings(args)) as fc:
        fc.subscribe(fleet_filter(fleet=args.fleet, leaf="telemetry/drift", prefix=args.prefix))
        for msg in fc.messages(timeout_s=5.0, idle_s=0.5):
            parts = split_device_topic(msg.topic, prefix=args.prefix)
            if parts is None or not msg.payload:
                continue
            try:
                docs[parts[1]] = parse_drift(msg.payload)
            except PayloadRejected as e:
                bad.append(f"{parts[1]}: {e}")
    rows = [_row(device, doc) for device, doc in sorted(docs.items())]
    releases = _by_release(rows)
    if args.json:
        print(json.dumps({"devices": rows, "releases": releases, "malformed": bad}, indent=2))
        return 0
    if not rows:
        print(f"no device of fleet {args.fleet!r} has published drift scores on {args.broker}")
    else:
        print(_table(["device", "model", "release", "checks", "window", "worst psi", "on", "alarms"],
                     [[r["device"], r["model"], r["release"], r["checks"], r["window_samples"], f"{r['worst_psi']:.3f}",
                       r["worst"], ", ".join(r["alarms"]) or "-"] for r in rows]))
        print()
        print(_table(["model", "release", "devices", "worst psi", "devices alarmed"],
                     [[k["model"], k["release"], k["devices"], f"{k['worst_psi']:.3f}", k["alarmed"]] for k in releases]))
    for line in bad:
        print(f"skipped malformed drift document: {line}", file=sys.stderr)
    return 0


def _row(device: str, doc: dict) -> dict:
    scores = doc.get("scores") or []
    worst = max(scores, key=lambda s: s["psi"], default=None)
    m = doc.get("model") or {}
    return {"device": device, "model": m.get("name", "-"), "release": m.get("release", "-"),
            "checks": doc.get("checks", 0), "window_samples": doc.get("window_samples", 0),
            "worst_psi": float(worst["psi"]) if worst else 0.0,
            "worst": f"{worst['kind']} {worst['name']}" if worst else "-",
            "alarms": list(doc.get("alarms") or []), "scores": scores}


def _by_release(rows: list[dict]) -> list[dict]:
    out: dict[tuple, dict] = {}
    for r in rows:
        k = out.setdefault((r["model"], r["release"]), {"model": r["model"], "release": r["release"], "devices": 0,
                                                       "worst_psi": 0.0, "alarmed": 0})
        k["devices"] += 1
        k["worst_psi"] = max(k["worst_psi"], r["worst_psi"])
        k["alarmed"] += bool(r["alarms"])
    return list(out.values())


def _table(head: list[str], rows: list[list]) -> str:
    cells = [head] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in cells)


def _profile(args) -> int:
    from pathlib import Path

    from runtime.contracts.bundle import read_bundle_info
    from runtime.fsutil import sha256_file

    from ..bench import api
    from ..bench.report_md import tables
    from ..errors import BadInputError
    from .cliargs import settings, signer_of, topics
    from .client import FleetClient
    from .profile import request_profile, to_bench_result

    topics(args, args.device)
    try:
        threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        raise BadInputError(f"--threads {args.threads!r}: expected a comma list of integers") from None
    body: dict = {"threads": threads, "preset": args.preset}
    over = {k: v for k, v in (("min_iters", args.min_iters), ("min_duration_s", args.min_duration),
                              ("warmup_min_s", args.warmup_s)) if v is not None}
    if over:
        body["run_length"] = over
    if args.bundle:
        try:
            info = read_bundle_info(args.bundle)
        except (OSError, ValueError) as e:
            raise BadInputError(f"--bundle {args.bundle}: {e}") from e
        body.update(sha256=sha256_file(args.bundle), model=info.name)
    elif args.model:
        body["model"] = args.model
    out = Path(args.out or f"profile-{args.device}")
    with FleetClient(settings(args), signer=signer_of(args)) as fc:
        answer, doc = request_profile(fc, fleet=args.fleet, device=args.device, body=body, timeout_s=args.timeout,
                                      progress=None if args.json else sys.stderr)
    result = to_bench_result(doc, out_dir=out, fleet=args.fleet, device=args.device)
    paths = api.write_reports(result, out)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(tables(result))
        print(f"wrote {paths['json']}, {paths['markdown']}, {paths['html']}  (compare with a desk run: "
              f"edgeship bench compare DESK/result.json {paths['json']})")
    return api.exit_code(result)
