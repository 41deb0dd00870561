"""`edgeship fleet capture pull --fleet F [--device D] [--since T] --out DIR` (docs/capture.md)."""

from __future__ import annotations

import calendar
import json
import re
import sys
import time
from pathlib import Path

from ...errors import BadInputError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def add_capture_parser(fs, broker_args, keys_arg) -> None:
    c = fs.add_parser("capture", help="captured device data: pull it from devices")
    cs = c.add_subparsers(dest="capture_command", required=True, metavar="{pull}")
    p = cs.add_parser("pull", help="fetch captures from devices over a signed pull (MQTT chunks or HTTP PUT); "
                                   "the devices delete what was received and acknowledged")
    p.add_argument("--fleet", required=True)
    p.add_argument("--device", action="append", help="a device id (repeat; default: every online device)")
    p.add_argument("--since", metavar="T", help="captures at or after T: ISO time (2026-12-01T08:00:00Z), "
                                                "epoch milliseconds, or an age such as 30m, 2h, 1d")
    p.add_argument("--out", required=True, metavar="DIR", help="the capture set to write (a new directory, or "
                                                                "one an interrupted pull left: it resumes)")
    p.add_argument("--transport", choices=["mqtt", "http"], default="mqtt",
                   help="mqtt: chunks through the broker (small volumes); http: the device PUTs each file")
    p.add_argument("--upload-url", metavar="TEMPLATE", help="http: where the device PUTs each file, with "
                   "{fleet} {device} {id} {pull_id} (e.g. http://10.0.0.5:9000/captures/{device}/{id}.npz)")
    p.add_argument("--fetch-url", metavar="TEMPLATE", help="http: where this side reads an upload back "
                                                           "(default: --upload-url)")
    p.add_argument("--max-files", type=int, default=16, help="files per round (default %(default)s, at most 64)")
    p.add_argument("--stall", type=float, default=10.0, help="seconds without a message before a round is "
                                                              "asked again (default %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per device at most (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    keys_arg(p)
    broker_args(p)
    p.set_defaults(func=_pull)


def parse_since(text: str | None, *, now_s: float | None = None) -> int | None:
    """Epoch milliseconds of ``--since``. Raises BadInputError."""
    if text is None:
        return None
    now_s = time.time() if now_s is None else now_s
    m = _DURATION.match(text)
    if m:
        return int((now_s - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]) * 1000)
    if text.isdigit():
        return int(text)
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(text, fmt)) * 1000
        except ValueError:
            continue
    raise BadInputError(f"--since {text!r}: expected an ISO time (2026-12-01T08:00:00Z), epoch milliseconds "
                        "or an age (30m, 2h, 1d)")


def _options(args):
    from runtime.contracts.capture.pull import MAX_FILES, Transport

    from .puller import PullOptions

    if not 1 <= args.max_files <= MAX_FILES:
        raise BadInputError(f"--max-files {args.max_files}: must be 1..{MAX_FILES}")
    if args.transport == "http" and not args.upload_url:
        raise BadInputError("--transport http needs --upload-url TEMPLATE (where the device PUTs each file)")
    if args.upload_url and not re.match(r"^https?://", args.upload_url):
        raise BadInputError(f"--upload-url {args.upload_url!r}: expected an http:// or https:// URL")
    return PullOptions(transport=Transport(args.transport), upload_url=args.upload_url, fetch_url=args.fetch_url,
                       since_ms=parse_since(args.since), max_files=args.max_files, stall_s=args.stall,
                       timeout_s=args.timeout)


def _writer(out: str):
    from runtime.contracts.capture import fileformat as ff

    from ...data.captures import SetWriter

    p = Path(out)
    if p.exists() and any(p.iterdir()) and not ff.is_capture_set(p):
        raise BadInputError(f"--out {out}: exists and is not a capture set; give a new directory")
    return SetWriter(p, fresh=False)


def _pull(args) -> int:
    from ..cliargs import settings, signer_of, topics
    from ..client import FleetClient
    from ..errors import FleetError
    from .puller import DevicePull

    opts = _options(args)
    for d in args.device or ["any-device"]:
        topics(args, d)
    signer = signer_of(args)
    writer = _writer(args.out)
    cfg = settings(args)
    devices, skipped = list(args.device or []), []
    if not devices:
        with FleetClient(cfg) as fc:
            views = fc.snapshot(args.fleet)
        devices = sorted(d for d, v in views.items() if (v.status or {}).get("online"))
        skipped = sorted(d for d in views if d not in devices)
        if not devices:
            raise FleetError(f"no online device in fleet {args.fleet!r}" + (f" (offline: {skipped})" if skipped else ""))
    progress = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.json else None
    results, errors = {}, {}
    try:
        for d in devices:
            pull = DevicePull(connect=lambda: FleetClient(cfg), signer=signer, fleet=args.fleet, device=d,
                              prefix=args.prefix, writer=writer, options=opts, progress=progress)
            try:
                results[d] = pull.run().to_json()
            except FleetError as e:
                errors[d] = str(e)
                results[d] = pull.stats.to_json()
    finally:  # a disk error or ^C mid-pull: the verified files so far stay a readable set
        index = writer.commit()
    from ...data.captures import set_sha256

    report = {"out": str(writer.root), "files": len(index.entries), "samples": sum(e.meta.samples for e in index.entries),
              "sha256": set_sha256(index), "devices": results, "errors": errors, "offline_skipped": skipped}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    if errors and len(errors) == len(devices):
        return 1
    return 3 if errors or skipped else 0


def _print(report: dict) -> None:
    from ...console import format_table, human_bytes

    rows = []
    for d, s in sorted(report["devices"].items()):
        rate = s["bytes"] / s["seconds"] / 1e6 if s.get("seconds") else None
        rows.append((d, s["files"], s["samples"], human_bytes(s["bytes"]), s["rounds"], s["retries"],
                     s["already_had"], len(s.get("skipped") or {}), f"{s['seconds']:.1f}",
                     None if rate is None else f"{rate:.2f}",
                     "error: " + report["errors"][d] if d in report["errors"] else "ok"))
    print(format_table(["device", "files", "samples", "bytes", "rounds", "retries", "already had", "skipped", "s",
                        "MB/s", "result"], rows, align="lrrrrrrrrrl"))
    print(f"\n{report['files']} captures ({report['samples']} samples) in {report['out']}  sha256 "
          f"{report['sha256'][:12]}" + (f"; offline, skipped: {report['offline_skipped']}"
                                        if report["offline_skipped"] else ""))
