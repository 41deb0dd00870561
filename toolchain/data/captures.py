"""Captured device data on the host: a verified capture set as per-sample records, as the
arrays ``edgeship compile`` takes, and as the provenance a build records.

Every reader here goes through :func:`runtime.contracts.capture.fileformat.load_set`, so a
set with a missing, partial, tampered or unlisted file is refused (the error names each
file) before any sample is used.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runtime.contracts.capture import fileformat as ff

from ..errors import DataError

LABELS_KEY = ff.LABELS_KEY


@dataclass(frozen=True)
class Sample:
    """One captured sample: its inputs (no sample axis), its outputs when the model answered
    one per sample, its label, and the capture it came from."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    label: int | None
    meta: ff.CaptureMeta
    index: int  # position inside its capture

    @property
    def content_sha256(self) -> str:
        """Hash of the input tensors (names, dtypes, shapes, bytes): equal inputs, equal hash."""
        h = hashlib.sha256()
        for k in sorted(self.inputs):
            a = np.ascontiguousarray(self.inputs[k])
            h.update(f"{k}|{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()


def load(root: str | os.PathLike) -> list[tuple[ff.IndexEntry, ff.Capture]]:
    """Every capture of a verified set. Raises CaptureFormatError / CaptureSetRefusedError (exit 2)."""
    return list(ff.load_set(root))


def samples(caps: list[tuple[ff.IndexEntry, ff.Capture]]) -> Iterator[Sample]:
    for _, cap in caps:
        n = cap.meta.samples
        for i in range(n):
            outs = {k: v[i] for k, v in cap.outputs.items()
                    if cap.meta.layout == "batch" and v.ndim >= 1 and v.shape[0] == n}
            label = None if cap.labels is None else int(cap.labels[i])
            yield Sample(inputs={k: v[i] for k, v in cap.inputs.items()}, outputs=outs, label=label,
                         meta=cap.meta, index=i)


def capture_arrays(root: str | os.PathLike) -> dict[str, np.ndarray]:
    """The inputs of a capture set as compile data (``{input: [N, ...]}`` in index order, plus
    ``__labels__`` when every capture carries labels). Error captures are included (their
    inputs are real inputs).

    Raises:
        CaptureFormatError/CaptureSetRefusedError: the set does not verify (names the files).
        DataError: no samples, or captures whose tensors cannot be stacked (names the files).
    """
    caps = load(root)
    if not caps:
        raise DataError(f"{root}: the capture set holds no captures")
    _one_model(root, {tuple(sorted(c.inputs)) for _, c in caps})
    out: dict[str, np.ndarray] = {}
    for k in caps[0][1].inputs:
        try:
            out[k] = np.concatenate([c.inputs[k] for _, c in caps])
        except ValueError as e:
            shapes = sorted({(e_.path, c.inputs[k].shape[1:]) for e_, c in caps}, key=str)[:4]
            raise DataError(f"{root}: input {k!r} has different per-sample shapes across captures "
                            f"(e.g. {shapes}): {e}") from e
    if all(c.labels is not None for _, c in caps):
        out[LABELS_KEY] = np.concatenate([c.labels for _, c in caps]).astype(np.int64)
    return out


def load_labelled(root: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The labelled samples of a verified capture set (a pull, or a part of ``edgeship data
    split``), to train on: ``({input: [N, ...]}, int64[N] labels)`` in index order. Samples
    without a label (requests that carried no ``edgeship_expected``) are left out.

    Raises:
        CaptureFormatError/CaptureSetRefusedError: the set does not verify (names the files).
        DataError: no labelled sample, or samples whose inputs cannot be stacked.
    """
    picked = [s for s in samples(load(root)) if s.label is not None]
    if not picked:
        raise DataError(f"{root}: no labelled sample in the capture set (a request is labelled by its "
                        "parameter edgeship_expected)")
    _one_model(root, {tuple(sorted(s.inputs)) for s in picked})
    try:
        inputs = {k: np.stack([s.inputs[k] for s in picked]) for k in picked[0].inputs}
    except ValueError as e:
        raise DataError(f"{root}: the labelled samples' inputs have different shapes: {e}") from e
    return inputs, np.array([s.label for s in picked], np.int64)


def _one_model(root: str | os.PathLike, names: set[tuple[str, ...]]) -> None:
    if len(names) != 1:
        raise DataError(f"{root}: captures hold different inputs {sorted(names)} (several models?); "
                        "split the set by model first")


def capture_file_arrays(path: Path) -> dict[str, np.ndarray]:
    """One capture file given on its own: checked against the index of the set it sits in.

    Raises:
        DataError: the file is not listed in an index beside it (copied without it), or does not
            match its entry (partial or tampered), naming the file.
    """
    where = ff.set_of(path)
    if where is None:
        raise DataError(f"{path}: a capture file without a capture-set index beside it cannot be verified; "
                        "pass the set's directory")
    root, rel = where
    index = ff.read_index(root)
    entry = next((e for e in index.entries if e.path == rel), None)
    if entry is None:
        raise DataError(f"{path}: not listed in {root / ff.INDEX} (a partial copy?); refused")
    why = ff.verify_entry(entry, path.read_bytes())
    if why:
        raise DataError(f"{path}: refused: {why}")
    cap = ff.decode(path.read_bytes(), where=str(path))
    out = dict(cap.inputs)
    if cap.labels is not None:
        out[LABELS_KEY] = cap.labels.astype(np.int64)
    return out


def set_sha256(index: ff.CaptureIndex) -> str:
    """The capture set's identity: sha256 over its files' sha256s (sorted), independent of
    paths and of the order of the index."""
    h = hashlib.sha256()
    for sha in sorted(e.sha256 for e in index.entries):
        h.update(sha.encode())
    return h.hexdigest()


def provenance(root: str | os.PathLike) -> dict[str, Any]:
    """What a build records of the capture set it was made from (``data_provenance``).

    Raises: CaptureFormatError / CaptureSetRefusedError (the set does not verify).
    """
    return provenance_of(ff.verify_set(root), source=root)


def provenance_of(index: ff.CaptureIndex, *, source: str | os.PathLike) -> dict[str, Any]:
    """:func:`provenance` of an index already verified."""
    root = source
    metas = [e.meta for e in index.entries]
    ts = [m.ts_ms for m in metas]
    releases = sorted({(m.model.get("name"), m.model.get("release"), m.model.get("sha256")) for m in metas}, key=str)
    return {
        "kind": "capture_set", "source": os.fspath(root), "sha256": set_sha256(index), "files": len(metas),
        "samples": sum(m.samples for m in metas),
        "devices": sorted({f"{m.fleet}/{m.device}" for m in metas}),
        "releases": [{"model": n, "release": r, "sha256": s} for n, r, s in releases],
        "rules": sorted({m.rule for m in metas}),
        "labelled_samples": sum(m.samples for m in metas if m.labels),
        "time_range_utc": [_utc(min(ts)), _utc(max(ts))] if ts else None,
    }


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


class SetWriter:
    """Writes a capture set on the host: each file atomically, the index after the files it
    lists (``add`` then ``commit``; a set directory being written is refused by readers until
    its index lists every file)."""

    def __init__(self, root: str | os.PathLike, *, fresh: bool = True) -> None:
        """``fresh``: the directory must be new or empty (a set is never mixed into another).

        Raises: DataError (``fresh`` and the directory holds files).
        """
        self.root = Path(root)
        if fresh and self.root.exists() and any(self.root.iterdir()):
            raise DataError(f"{self.root}: exists and is not empty; give a new directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, ff.IndexEntry] = {}
        if not fresh and (self.root / ff.INDEX).exists():
            self.entries = {e.path: e for e in ff.read_index(self.root).entries}

    def add_bytes(self, path: str, data: bytes, meta: ff.CaptureMeta) -> ff.IndexEntry:
        from runtime.fsutil import atomic_write_bytes

        entry = ff.IndexEntry.of(path, data, meta)
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        self.entries[path] = entry
        return entry

    def add(self, capture: ff.Capture, *, subdir: str = "") -> ff.IndexEntry:
        path = f"{subdir}/{capture.meta.id}{ff.SUFFIX}" if subdir else f"{capture.meta.id}{ff.SUFFIX}"
        return self.add_bytes(path, ff.encode(capture), capture.meta)

    def commit(self) -> ff.CaptureIndex:
        from runtime.fsutil import atomic_write_bytes

        index = ff.CaptureIndex(tuple(sorted(self.entries.values(), key=lambda e: (e.meta.ts_ms, e.path))))
        atomic_write_bytes(self.root / ff.INDEX, index.to_bytes())
        return index
