"""`edgeship data split`: calibration and validation sets from a pulled capture set.

Samples (not files: a capture may hold a batch) are deduplicated by the hash of their input
tensors (the first in time is kept), then each device's unique samples are shuffled (seeded by
``seed`` and the device name, so a device's split does not depend on the other devices) and
``validation_share`` of them go to validation, the rest to calibration: every device is
represented in both at its own share (stratified per device). With ``labelled_validation``
only labelled samples may go to validation. The two outputs are capture sets again
(``<out>/calibration``, ``<out>/validation``: the kept samples of each source capture
in one file with the source's meta, id suffixed ``.cal``/``.val``), so compile verifies them and a
build records their provenance.
"""

from __future__ import annotations

import os
import zlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contracts.capture import fileformat as ff

from ..errors import BadInputError
from . import captures

CALIBRATION, VALIDATION = "calibration", "validation"


def choose(samples: list[captures.Sample], *, validation_share: float, seed: int,
           labelled_validation: bool) -> tuple[dict[str, list[captures.Sample]], dict[str, dict[str, int]]]:
    """The pure split: ``({"calibration": [...], "validation": [...]}, per-device counts)``."""
    seen: set[str] = set()
    by_device: dict[str, list[captures.Sample]] = defaultdict(list)
    dups: dict[str, int] = defaultdict(int)
    for s in sorted(samples, key=lambda s: (s.meta.ts_ms, s.meta.id, s.index)):
        dev = f"{s.meta.fleet}/{s.meta.device}"
        h = s.content_sha256
        if h in seen:
            dups[dev] += 1
            continue
        seen.add(h)
        by_device[dev].append(s)
    out: dict[str, list[captures.Sample]] = {CALIBRATION: [], VALIDATION: []}
    counts: dict[str, dict[str, int]] = {}
    for dev in sorted(by_device):
        items = by_device[dev]
        rng = np.random.default_rng([seed, zlib.crc32(dev.encode())])
        order = [items[i] for i in rng.permutation(len(items))]
        eligible = [s for s in order if s.label is not None] if labelled_validation else order
        k = int(round(validation_share * len(eligible)))
        if validation_share > 0 and k == 0 and len(eligible) >= 2:
            k = 1
        if k >= len(items) and len(items) >= 2:
            k = len(items) - 1  # calibration keeps at least one sample of the device
        val = {id(s) for s in eligible[:k]}
        for s in order:
            out[VALIDATION if id(s) in val else CALIBRATION].append(s)
        counts[dev] = {"unique_samples": len(items), "duplicates_dropped": dups.get(dev, 0),
                       CALIBRATION: len(items) - k, VALIDATION: k,
                       "labelled": sum(s.label is not None for s in items)}
    for dev, n in dups.items():  # a device whose every sample duplicated another device's
        counts.setdefault(dev, {"unique_samples": 0, "duplicates_dropped": n, CALIBRATION: 0, VALIDATION: 0,
                                "labelled": 0})
    return out, counts


def regroup(chosen: list[captures.Sample], suffix: str) -> list[ff.Capture]:
    """The chosen samples back into captures: one per source capture, its meta kept."""
    groups: dict[str, list[captures.Sample]] = defaultdict(list)
    for s in chosen:
        groups[s.meta.id].append(s)
    out = []
    for items in groups.values():
        items.sort(key=lambda s: s.index)
        m = items[0].meta
        inputs = {k: np.stack([s.inputs[k] for s in items]) for k in m.inputs}
        if m.layout == "whole":
            outputs = items[0].outputs
        else:
            outputs = {k: np.stack([s.outputs[k] for s in items]) for k in items[0].outputs}
        labels = np.array([s.label for s in items], np.int64) if m.labels else None
        meta = replace(m, id=f"{m.id}.{suffix}", samples=len(items), outputs=tuple(outputs))
        out.append(ff.Capture(meta=meta, inputs=inputs, outputs=outputs, labels=labels))
    return out


def split(root: str | os.PathLike, out: str | os.PathLike, *, validation_share: float = 0.2, seed: int = 0,
          labelled_validation: bool = False) -> dict[str, Any]:
    """Write ``<out>/calibration`` and ``<out>/validation``. Returns the report.

    Raises:
        BadInputError: a share outside [0, 1), an output directory that is not empty.
        CaptureFormatError / CaptureSetRefusedError: the source does not verify (files named).
    """
    if not 0.0 <= validation_share < 1.0:
        raise BadInputError(f"--validation-share {validation_share}: must be in [0, 1)")
    out = Path(out)
    writers = {name: captures.SetWriter(out / name) for name in (CALIBRATION, VALIDATION)}
    chosen, counts = choose(list(captures.samples(captures.load(root))), validation_share=validation_share,
                            seed=seed, labelled_validation=labelled_validation)
    report: dict[str, Any] = {"source": os.fspath(root), "validation_share": validation_share, "seed": seed,
                              "labelled_validation": labelled_validation, "devices": counts}
    for name, w in writers.items():
        for cap in regroup(chosen[name], "cal" if name == CALIBRATION else "val"):
            w.add(cap, subdir=_subdir(cap.meta))
        index = w.commit()
        report[name] = {"dir": os.fspath(w.root), "samples": len(chosen[name]), "files": len(index.entries),
                        "labelled": sum(s.label is not None for s in chosen[name]),
                        "sha256": captures.set_sha256(index)}
    return report


def _subdir(m: ff.CaptureMeta) -> str:
    return m.device if ff.check_path(f"{m.device}/x.npz", where="device name") else ""


def render(report: dict[str, Any]) -> str:
    from ..console import format_table

    rows = [(dev, c["unique_samples"], c["duplicates_dropped"], c[CALIBRATION], c[VALIDATION], c["labelled"])
            for dev, c in sorted(report["devices"].items())]
    lines = [format_table(["device", "unique", "duplicates", CALIBRATION, VALIDATION, "labelled"], rows,
                          align="lrrrrr"), ""]
    for name in (CALIBRATION, VALIDATION):
        r = report[name]
        lines.append(f"{name:<12} {r['samples']:>6} samples in {r['files']} files ({r['labelled']} labelled) -> "
                     f"{r['dir']}  sha256 {r['sha256'][:12]}")
    return "\n".join(lines)
