"""`edgeship bundle inspect BUNDLE`: what a bundle's ``model.json`` says, in the words
`edgeship package` prints when it writes one (the model, its engine and requirements, the
golden set, the drift baseline and the capture rules the release ships with).

The bundle is checked as the device checks it before unpacking (strict model.json, members
exactly the files it lists); its sha256 is the file's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.contracts.bundle import BundleInfo

from .capture_rules import describe_rule


def add_parser(sub) -> None:
    p = sub.add_parser("bundle", help="look at a model bundle (.tar from `edgeship package`)")
    bs = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    i = bs.add_parser("inspect", help="print a bundle's model.json: model, engine, golden set, drift baseline, "
                                      "capture rules")
    i.add_argument("bundle", metavar="BUNDLE", help="bundle .tar")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(func=_inspect)


def _inspect(args) -> int:
    """Raises BundleError (exit 2) for a bundle that is not one, OSError (1) for an unreadable file."""
    from runtime.contracts.bundle import read_bundle_info
    from runtime.fsutil import sha256_file

    path = Path(args.bundle)
    info = read_bundle_info(path)
    sha = sha256_file(path)
    print(json.dumps(result_json(path, sha, info), indent=2) if args.json else summary(path, sha, info))
    return 0


def result_json(path: Path, sha256: str, info: BundleInfo) -> dict[str, Any]:
    """``--json`` of `package` and `bundle inspect`: the path, sha256, model.json, and the
    capture rules (also in model.json's ``capture`` from schema 3; here always a list)."""
    return {"path": str(path), "sha256": sha256, "model": info.to_json(),
            "capture_rules": [r.to_json() for r in (info.capture.rules if info.capture else ())]}


def summary(path: Path, sha256: str, info: BundleInfo, *, drift_note: str | None = None) -> str:
    """The text `package` and `bundle inspect` print (``drift_note``: why there is no baseline)."""
    i = info
    lines = [f"{path}", f"  sha256   {sha256}", f"  model    {i.name} {i.version} (release {i.release}, "
             f"model.json schema {i.schema_version})",
             f"  engine   {i.engine.value} {i.precision.value}, needs >= {i.requirements.min_engine_version} "
             f"on {', '.join(i.requirements.arch)}",
             f"  golden   {i.golden_calls} calls, atol {i.tolerances.atol:.4g}, "
             f"min cosine {i.tolerances.min_cosine:.4g}"]
    if i.drift is not None:
        t = i.drift.thresholds
        mix = f" + class mix of {i.drift.classes.output!r}" if i.drift.classes else ""
        lines.append(f"  drift    baseline of {len(i.drift.tensors)} tensor(s){mix} "
                     f"over {i.drift.samples} samples; alarms at PSI > {t.psi:g}, out of range > "
                     f"{t.out_of_range_share:g}, NaN/Inf > {t.nonfinite_share:g}")
    else:
        lines.append(f"  drift    {drift_note or 'no drift baseline'}")
    rules = i.capture.rules if i.capture is not None else ()
    if rules:
        lines.append(f"  capture  {len(rules)} rule(s), applied where agent.toml has [capture] enabled "
                     f"(and use_bundle_rules):")
        lines += [f"             {describe_rule(r, i.class_output)}" for r in rules]
    else:
        lines.append("  capture  no rules ship with this release")
    return "\n".join(lines)
