"""The capture-set format: what the agent stores, the pull moves and ``edgeship data`` /
``edgeship compile`` read. A capture set is a directory::

    index.json            {"schema": "edgeship.capture-set/1",
                           "files": [{"path": "<id>.npz", "sha256": ..., "bytes": ..., "meta": {...}}]}
    <id>.npz              one capture (paths may have one directory level: "<device>/<id>.npz")

One capture ``.npz`` (plain ``numpy.savez``, no pickles) holds:

- ``<input name>``: each model input, samples along axis 0 (``meta.layout`` "batch": the
  request's own first axis, the model's batch; "whole": one whole request per sample, a new
  leading axis of 1 — models whose inputs do not all have a dynamic first dim);
- ``out:<output name>``: the outputs the model answered (none for an ``error`` capture);
- ``__labels__``: int64 ``[samples]``, the expected classes the request carried (when it did);
- ``__meta__``: uint8, the UTF-8 JSON of :class:`CaptureMeta` (the same object as the index
  entry's ``meta``): id, time, fleet/device, the model and release that served it, the rule
  that fired (and every rule that did), samples, tensor names, score, error.

Integrity: the index names every file with its sha256 and size; a reader refuses a set in
which a file is missing, shorter or longer (partial), differs from its hash (tampered), is not
a capture, disagrees with its index entry, or sits in the directory unlisted, naming each file
(:class:`CaptureSetRefusedError`). Files are written atomically by their writers
(``runtime.fsutil.AtomicFile``; index last), so a crash leaves the old index and at most an
unlisted temp file.

Pure except :func:`read_index` and :func:`load_set`, which read the directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import ContractError

CAPTURE_SCHEMA = "edgeship.capture/1"
SET_SCHEMA = "edgeship.capture-set/1"
INDEX = "index.json"
META_KEY = "__meta__"
LABELS_KEY = "__labels__"
OUT_PREFIX = "out:"
SUFFIX = ".npz"
#: the largest index.json read (it is read before anything is trusted)
MAX_INDEX_BYTES = 64 << 20

_SHA = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LAYOUTS = ("batch", "whole")


class CaptureFormatError(ContractError):
    """A capture file or capture-set index does not follow the format (the message names it)."""


class CaptureSetRefusedError(CaptureFormatError):
    """Files of a capture set are missing, partial, tampered or unlisted; ``problems`` lists
    ``(path, reason)`` for each, and the message names them."""

    def __init__(self, root: str, problems: list[tuple[str, str]]) -> None:
        self.root = root
        self.problems = problems
        shown = "; ".join(f"{p}: {why}" for p, why in problems[:10])
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__(f"capture set {root}: {len(problems)} file(s) refused: {shown}{more}")


# ---------------------------------------------------------------------------- meta
@dataclass(frozen=True)
class CaptureMeta:
    id: str
    ts_ms: int
    fleet: str
    device: str
    model: Mapping[str, Any]     # {"name", "version", "release", "sha256"} of the model that served it
    rule: str                    # the rule it is counted against (highest priority of those that fired)
    trigger: str
    rules: tuple[str, ...]       # every rule that fired
    samples: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    labels: bool
    layout: str
    score: float | None = None   # low_confidence: the lowest top-1 probability; drift: its contribution
    error: str | None = None     # error: what the engine said

    def to_json(self) -> dict[str, Any]:
        return {"schema": CAPTURE_SCHEMA, "id": self.id, "ts_ms": self.ts_ms, "fleet": self.fleet,
                "device": self.device, "model": dict(self.model), "rule": self.rule, "trigger": self.trigger,
                "rules": list(self.rules), "samples": self.samples, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "labels": self.labels, "layout": self.layout,
                "score": self.score, "error": self.error}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "CaptureMeta":
        """Raises CaptureFormatError naming ``where`` and the key."""
        keys = set(cls("x", 0, "", "", {}, "", "", (), 1, (), (), False, "batch").to_json())
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise CaptureFormatError(f"{where}: capture meta must have exactly the keys {sorted(keys)}, got {got}")
        if d["schema"] != CAPTURE_SCHEMA:
            raise CaptureFormatError(f"{where}: schema {d['schema']!r} is not {CAPTURE_SCHEMA!r}")
        model = d["model"]
        if not isinstance(model, dict) or not {"name", "release", "sha256"} <= set(model):
            raise CaptureFormatError(f"{where}.model: needs name, release and sha256")
        if not isinstance(d["id"], str) or not _ID.match(d["id"]):
            raise CaptureFormatError(f"{where}.id: {d['id']!r} is not a capture id")
        if d["layout"] not in _LAYOUTS:
            raise CaptureFormatError(f"{where}.layout: {d['layout']!r} is not one of {list(_LAYOUTS)}")
        for k in ("ts_ms", "samples"):
            if isinstance(d[k], bool) or not isinstance(d[k], int) or d[k] < (1 if k == "samples" else 0):
                raise CaptureFormatError(f"{where}.{k}: expected a positive integer, got {d[k]!r}")
        for k in ("rules", "inputs", "outputs"):
            if not isinstance(d[k], list) or not all(isinstance(x, str) for x in d[k]):
                raise CaptureFormatError(f"{where}.{k}: expected a list of names")
        if not isinstance(d["labels"], bool) or not (d["score"] is None or isinstance(d["score"], (int, float))):
            raise CaptureFormatError(f"{where}: labels must be true/false and score a number or null")
        return cls(id=d["id"], ts_ms=d["ts_ms"], fleet=str(d["fleet"]), device=str(d["device"]), model=dict(model),
                   rule=str(d["rule"]), trigger=str(d["trigger"]), rules=tuple(d["rules"]), samples=d["samples"],
                   inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]), labels=d["labels"], layout=d["layout"],
                   score=None if d["score"] is None else float(d["score"]),
                   error=None if d["error"] is None else str(d["error"]))


@dataclass(frozen=True)
class Capture:
    """One capture: its meta and tensors (inputs samples along axis 0; outputs as answered)."""

    meta: CaptureMeta
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None


def encode(capture: Capture) -> bytes:
    """The capture's ``.npz`` bytes.

    Raises:
        CaptureFormatError: a tensor name collides with the reserved keys, or the arrays do not
            agree with the meta (names, sample count, labels).
    """
    m = capture.meta
    _check_arrays(m, capture.inputs, capture.outputs, capture.labels, where=f"capture {m.id}")
    payload: dict[str, np.ndarray] = {k: np.ascontiguousarray(v) for k, v in capture.inputs.items()}
    payload.update({OUT_PREFIX + k: np.ascontiguousarray(v) for k, v in capture.outputs.items()})
    if capture.labels is not None:
        payload[LABELS_KEY] = np.asarray(capture.labels, dtype=np.int64).reshape(-1)
    payload[META_KEY] = np.frombuffer(json.dumps(m.to_json(), sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **payload)
    return buf.getvalue()


def decode(data: bytes, *, where: str) -> Capture:
    """Parse a capture's ``.npz`` bytes. Raises CaptureFormatError (not an npz, no meta, a
    pickle, arrays that disagree with the meta)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/numpy raise many kinds on a broken file
        raise CaptureFormatError(f"{where}: not a readable .npz ({type(e).__name__}: {e})") from e
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8:
        raise CaptureFormatError(f"{where}: no {META_KEY} (not an edgeship capture)")
    try:
        meta = CaptureMeta.from_json(json.loads(raw.tobytes().decode("utf-8")), where=f"{where}:{META_KEY}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaptureFormatError(f"{where}: {META_KEY} is not UTF-8 JSON: {e}") from e
    labels = arrays.pop(LABELS_KEY, None)
    outputs = {k[len(OUT_PREFIX):]: v for k, v in arrays.items() if k.startswith(OUT_PREFIX)}
    inputs = {k: v for k, v in arrays.items() if not k.startswith(OUT_PREFIX)}
    _check_arrays(meta, inputs, outputs, labels, where=where)
    return Capture(meta=meta, inputs=inputs, outputs=outputs, labels=labels)


def _check_arrays(m: CaptureMeta, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                  labels: np.ndarray | None, *, where: str) -> None:
    reserved = [k for k in (*inputs, *outputs) if k.startswith("__") or k.startswith(OUT_PREFIX)]
    if reserved:
        raise CaptureFormatError(f"{where}: tensor names {reserved} collide with reserved keys")
    if sorted(inputs) != sorted(m.inputs) or sorted(outputs) != sorted(m.outputs):
        raise CaptureFormatError(f"{where}: tensors {sorted(inputs)} / outputs {sorted(outputs)} differ from "
                                 f"the meta's {sorted(m.inputs)} / {sorted(m.outputs)}")
    bad = [k for k, v in inputs.items() if v.ndim == 0 or v.shape[0] != m.samples]
    if bad:
        raise CaptureFormatError(f"{where}: inputs {bad} do not hold {m.samples} samples along axis 0")
    if (labels is not None) != m.labels or (labels is not None and np.asarray(labels).size != m.samples):
        raise CaptureFormatError(f"{where}: labels do not match the meta (labels={m.labels}, {m.samples} samples)")


# ---------------------------------------------------------------------------- index
@dataclass(frozen=True)
class IndexEntry:
    path: str
    sha256: str
    bytes: int
    meta: CaptureMeta

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "meta": self.meta.to_json()}

    @classmethod
    def of(cls, path: str, data: bytes, meta: CaptureMeta) -> "IndexEntry":
        return cls(path=check_path(path), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), meta=meta)


@dataclass(frozen=True)
class CaptureIndex:
    entries: tuple[IndexEntry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"schema": SET_SCHEMA, "files": [e.to_json() for e in self.entries]}

    def to_bytes(self) -> bytes:
        # "schema" first: is_capture_set() recognises a set from the file's first bytes
        return (json.dumps(self.to_json(), separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> "CaptureIndex":
        """Raises CaptureFormatError (not JSON, wrong schema, bad entries, duplicate paths)."""
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CaptureFormatError(f"{where}: not UTF-8 JSON: {e}") from e
        if not isinstance(d, dict) or set(d) != {"schema", "files"} or d["schema"] != SET_SCHEMA:
            raise CaptureFormatError(f"{where}: not a capture-set index (schema {SET_SCHEMA!r}, keys schema, files)")
        if not isinstance(d["files"], list):
            raise CaptureFormatError(f"{where}.files: expected a list")
        entries = []
        for i, e in enumerate(d["files"]):
            w = f"{where}.files[{i}]"
            if not isinstance(e, dict) or set(e) != {"path", "sha256", "bytes", "meta"}:
                raise CaptureFormatError(f"{w}: expected keys path, sha256, bytes, meta")
            if not isinstance(e["sha256"], str) or not _SHA.match(e["sha256"]):
                raise CaptureFormatError(f"{w}.sha256: not a lowercase hex sha256")
            if isinstance(e["bytes"], bool) or not isinstance(e["bytes"], int) or e["bytes"] < 0:
                raise CaptureFormatError(f"{w}.bytes: expected an integer >= 0")
            entries.append(IndexEntry(path=check_path(e["path"], where=f"{w}.path"), sha256=e["sha256"],
                                      bytes=e["bytes"], meta=CaptureMeta.from_json(e["meta"], where=f"{w}.meta")))
        paths = [e.path for e in entries]
        if len(set(paths)) != len(paths):
            raise CaptureFormatError(f"{where}.files: duplicate paths")
        return cls(entries=tuple(entries))


def check_path(path: Any, *, where: str = "capture path") -> str:
    """A relative ``.npz`` path of at most two levels, in normal form. Raises CaptureFormatError."""
    if (not isinstance(path, str) or not path.endswith(SUFFIX) or path.startswith("/") or "\\" in path
            or posixpath.normpath(path) != path or any(p in ("", ".", "..") or p.startswith(".")
                                                       for p in path.split("/")) or path.count("/") > 1):
        raise CaptureFormatError(f"{where}: {path!r} is not a relative <name>.npz or <dir>/<name>.npz path")
    return path


# ---------------------------------------------------------------------------- reading a directory
def is_capture_set(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a capture-set ``index.json``."""
    p = Path(path) / INDEX
    if not p.is_file():
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return SET_SCHEMA.encode() in head


def set_of(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(set root, index path)`` of a capture file inside a capture set (one or two levels
    below its index), or None."""
    p = Path(path)
    for root, rel in ((p.parent, p.name), (p.parent.parent, f"{p.parent.name}/{p.name}")):
        if is_capture_set(root):
            return root, rel
    return None


def read_index(root: str | os.PathLike) -> CaptureIndex:
    """Read ``<root>/index.json``. Raises CaptureFormatError (missing, too large, malformed)."""
    p = Path(root) / INDEX
    try:
        if p.stat().st_size > MAX_INDEX_BYTES:
            raise CaptureFormatError(f"{p}: larger than {MAX_INDEX_BYTES} bytes")
        data = p.read_bytes()
    except FileNotFoundError:
        raise CaptureFormatError(f"{root}: no {INDEX} (not a capture set)") from None
    except OSError as e:
        raise CaptureFormatError(f"{p}: cannot read: {e}") from e
    return CaptureIndex.from_bytes(data, where=str(p))


def listed_files(root: Path) -> set[str]:
    """Every ``.npz`` under ``root`` (two levels), as index paths."""
    out = {p.name for p in root.glob(f"*{SUFFIX}") if p.is_file()}
    out |= {f"{p.parent.name}/{p.name}" for p in root.glob(f"*/*{SUFFIX}") if p.is_file()}
    return out


def verify_entry(entry: IndexEntry, data: bytes) -> str | None:
    """Why ``data`` is not the file the index lists (None when it is). Pure."""
    if len(data) != entry.bytes:
        return f"partial: {len(data)} bytes, the index says {entry.bytes}"
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        return "tampered: its sha256 differs from the index"
    try:
        cap = decode(data, where=entry.path)
    except CaptureFormatError as e:
        return f"not a capture: {e}"
    if cap.meta != entry.meta:
        return "its meta differs from the index entry"
    return None


def verify_set(root: str | os.PathLike) -> CaptureIndex:
    """Check every file of a set against its index, one file in memory at a time.

    Raises:
        CaptureFormatError: no or a malformed index.
        CaptureSetRefusedError: any file missing, partial, tampered, not a capture, or unlisted
            (all of them named).
    """
    root = Path(root)
    index = read_index(root)
    problems: list[tuple[str, str]] = []
    for e in index.entries:
        try:
            data = (root / e.path).read_bytes()
        except FileNotFoundError:
            problems.append((e.path, "missing"))
            continue
        except OSError as err:
            problems.append((e.path, f"unreadable: {err}"))
            continue
        why = verify_entry(e, data)
        if why:
            problems.append((e.path, why))
    unlisted = sorted(listed_files(root) - {e.path for e in index.entries})
    problems += [(p, "not listed in the index (partial copy or added by hand)") for p in unlisted]
    if problems:
        raise CaptureSetRefusedError(str(root), problems)
    return index


def load_set(root: str | os.PathLike) -> Iterator[tuple[IndexEntry, Capture]]:
    """Every capture of a verified set, in index order: the whole set is verified first
    (:func:`verify_set`, which raises before anything is returned), then each file is read again
    and checked against its hash as it is returned (a file changed in between raises
    CaptureSetRefusedError naming it)."""
    root = Path(root)
    index = verify_set(root)

    def gen() -> Iterator[tuple[IndexEntry, Capture]]:
        for e in index.entries:
            data = (root / e.path).read_bytes()
            why = verify_entry(e, data)
            if why:
                raise CaptureSetRefusedError(str(root), [(e.path, why)])
            yield e, decode(data, where=e.path)

    return gen()
