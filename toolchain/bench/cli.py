"""``edgeship bench BUILD_DIR|MODEL_FILE [options]`` and ``edgeship bench compare OLD.json NEW.json``.

Imports nothing heavy at module level (engines load only in the cell processes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="latency benchmark of every artifact of a build (or one model file)",
        usage="edgeship bench [options] BUILD_DIR|MODEL_FILE\n       edgeship bench compare [--threshold REL] [--json] OLD.json NEW.json",
        description="Measure every artifact x configuration in a fresh process and write result.json, "
                    "report.md and report.html. `edgeship bench compare OLD.json NEW.json` flags regressions.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="+", metavar="TARGET",
                   help="a build directory, a .onnx/.xml/.tflite file, or: compare OLD.json NEW.json")
    p.add_argument("--preset", default="quick", choices=["quick", "standard", "long"],
                   help="run length: quick (>=200 runs, >=10 s; CI), standard (>=1000, >=60 s, 3 trials), "
                        "long (>=5000, >=600 s, 5 trials)")
    p.add_argument("--batch", type=_int_list, default=(1,), help="batch sizes, e.g. 1,8 (default 1)")
    p.add_argument("--threads", type=_int_list, default=(1,), help="thread counts, e.g. 1,2 (default 1)")
    p.add_argument("--streams", type=_int_list, default=(1,),
                   help="requests in flight, e.g. 1,4 (default 1; >1 is the throughput scenario)")
    p.add_argument("--repeats", type=int, default=None, help="fresh-process trials per configuration")
    p.add_argument("--pin", default="none", help="CPU pinning: none, auto (first N allowed CPUs) or 0,1")
    p.add_argument("--seed", type=int, default=0, help="seed for the shuffled order and random inputs")
    p.add_argument("--ov-precision", default="deploy", choices=["deploy", "auto", "f32", "both"],
                   help="OpenVINO: as the agent serves it (float IR pinned to f32), the engine's own "
                        "choice (bf16 on CPUs that have it), forced f32, or deploy and auto both")
    p.add_argument("--max-accuracy-drop", type=float, default=None, metavar="PTS",
                   help="accuracy budget in points for the recommendation")
    p.add_argument("--engine", action="append", default=None, help="only this engine (repeatable); "
                   "for a single .onnx file, run it on this engine")
    p.add_argument("--artifact", action="append", default=None, help="only this artifact id (repeatable)")
    p.add_argument("--input-shape", action="append", default=None, metavar="INPUT=D0,D1,...",
                   help="full example shape of an input (repeatable), as in `edgeship compile`: sizes for its "
                        "dynamic dims where inputs are generated (a model file, a build without validation "
                        "data); the batch axis takes --batch, e.g. x=1,3,48,192")
    p.add_argument("--min-iters", type=int, default=None, help="override the preset's minimum runs")
    p.add_argument("--min-duration", type=float, default=None, help="override the preset's minimum seconds")
    p.add_argument("--warmup-iters", type=int, default=None, help="override the preset's warm-up runs")
    p.add_argument("--warmup-s", type=float, default=None, help="override the preset's warm-up seconds")
    p.add_argument("--threshold", type=float, default=None,
                   help="compare: minimum relative p50 change to flag, > 0 (default 0.05 = 5%%)")
    p.add_argument("-o", "--out", default=None, help="output directory (default BUILD_DIR/bench or ./bench-<name>)")
    p.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def _length(args):
    from dataclasses import replace

    from runtime.bench.spec import Preset

    rl = Preset(args.preset).run_length()
    over = {k: v for k, v in (("min_iters", args.min_iters), ("min_duration_s", args.min_duration),
                              ("warmup_min_iters", args.warmup_iters), ("warmup_min_s", args.warmup_s))
            if v is not None}
    if not over:
        return None
    if "min_duration_s" in over and over["min_duration_s"] > rl.max_duration_s:
        over["max_duration_s"] = over["min_duration_s"] * 2
    return replace(rl, **over)


def run(args) -> int:
    if args.target[0] == "compare":
        return _compare(args)
    from ..errors import BadInputError

    if len(args.target) != 1:
        raise BadInputError("give one BUILD_DIR or MODEL_FILE (or: compare OLD.json NEW.json)")
    from pathlib import Path

    from runtime.bench.errors import CellSpecError

    from ..compile.options import parse_input_shapes
    from . import api
    from .errors import BenchInputError

    target = Path(args.target[0])
    out = Path(args.out) if args.out else (target / "bench" if target.is_dir() else Path(f"bench-{target.stem}"))
    single_file = not target.is_dir()
    try:
        cfg = api.make_config(preset=args.preset, batches=args.batch, threads=args.threads, streams=args.streams,
                              repeats=args.repeats, pin=args.pin, seed=args.seed, ov_precision=args.ov_precision,
                              max_accuracy_drop=args.max_accuracy_drop, run_length=_length(args),
                              engines=None if single_file else args.engine, artifacts=args.artifact,
                              input_shapes=parse_input_shapes(args.input_shape))
        result = api.bench(target, config=cfg, out_dir=out,
                           engine=(args.engine[0] if single_file and args.engine else None),
                           progress=None if args.quiet else sys.stderr)
        paths = api.write_reports(result, out)
    except (BenchInputError, CellSpecError) as e:  # bad input (exit 2), reported by runtime.cliutil.run
        raise BadInputError(str(e)) from e
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        from .report_md import tables

        print(tables(result))
        rec = result["analysis"]["recommendation"].get("best")
        if rec:
            print(f"recommended: {rec['artifact_id']} at {rec['threads']} thread(s), p50 {rec['p50_s'] * 1e3:.3f} ms")
        print(f"wrote {paths['json']}, {paths['markdown']}, {paths['html']}")
    return api.exit_code(result)


def _compare(args) -> int:
    from ..errors import BadInputError

    if len(args.target) != 3:
        raise BadInputError("usage: edgeship bench compare OLD.json NEW.json")
    if args.threshold is not None and not (math.isfinite(args.threshold) and args.threshold > 0):
        raise BadInputError(f"compare: --threshold {args.threshold:g} must be a relative p50 change above 0 "
                            "(e.g. 0.05 for 5%; the default is 0.05)")
    from . import compare, result
    from .errors import ResultFormatError

    try:
        old, new = result.load(args.target[1]), result.load(args.target[2])
    except ResultFormatError as e:
        raise BadInputError(f"compare: {e}") from e
    kw: dict[str, Any] = {} if args.threshold is None else {"min_rel": args.threshold}
    cmp = compare.compare(old, new, **kw)
    print(json.dumps(cmp, indent=2, sort_keys=True) if args.json else compare.format_comparison(cmp))
    return 1 if cmp["regressed"] else 0
