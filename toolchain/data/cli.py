"""`edgeship data inspect DIR` and `edgeship data split DIR --out OUT` (captured device data)."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="captured device data: inspect a pulled capture set, split it for compile",
                       description="Captured device data (docs/capture.md).")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{inspect,split}")
    i = dsub.add_parser("inspect", help="per tensor range/distribution vs a bundle's baseline, class mix, "
                                        "per device and release (verifies every file)")
    i.add_argument("dir", metavar="DIR", help="a capture set (index.json + .npz files)")
    i.add_argument("--bundle", metavar="FILE", help="a bundle .tar (or its model.json) whose baseline to compare with")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.set_defaults(func=_inspect)
    s = dsub.add_parser("split", help="calibration/validation capture sets, deduplicated, stratified per device")
    s.add_argument("dir", metavar="DIR", help="a capture set")
    s.add_argument("--out", required=True, metavar="OUT", help="writes OUT/calibration and OUT/validation (new dirs)")
    s.add_argument("--validation-share", type=float, default=0.2, metavar="X",
                   help="share of each device's unique samples for validation (default 0.2)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--labelled-validation", action="store_true",
                   help="validation takes labelled samples only (for accuracy figures)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=_split)


def _bundle_info(path: str | None):
    if path is None:
        return None
    from runtime.contracts.bundle import BundleInfo, read_bundle_info

    from ..errors import BadInputError

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"--bundle {path}: no such file")
    if p.suffix == ".json":
        return BundleInfo.from_bytes(p.read_bytes(), where=str(p))
    return read_bundle_info(p)


def _check_dir(path: str) -> None:
    from ..errors import BadInputError

    if not Path(path).is_dir():
        raise BadInputError(f"{path}: no such directory (give a capture set: index.json + .npz files)")


def _inspect(args) -> int:
    from . import inspect

    _check_dir(args.dir)
    report = inspect.summarize(args.dir, info=_bundle_info(args.bundle))
    print(json.dumps(report, indent=2) if args.json else inspect.render(report))
    return 0


def _split(args) -> int:
    from . import split

    _check_dir(args.dir)
    report = split.split(args.dir, args.out, validation_share=args.validation_share, seed=args.seed,
                         labelled_validation=args.labelled_validation)
    print(json.dumps(report, indent=2) if args.json else split.render(report))
    return 0
