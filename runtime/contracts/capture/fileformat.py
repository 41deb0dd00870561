"""The capture-set format: what the agent stores, the pull moves and ``edgeship data`` /
``edgeship compile`` read. A capture set is a directory::

    index.json            {"schema": "edgeship.capture-set/1",
                           "files": [{"path": "<id>.npz", "sha256": ..., "bytes": ..., "meta": {...}}]}
    <id>.npz              one capture (paths may have one directory level: "<device>/<id>.npz")

Schema ``edgeship.capture-set/2`` (what the device's store writes) also lets an entry say
that its capture sits in a *segment*, an append-only file of many captures
(runtime.contracts.capture.segments): ``"segment": "<name>.seg", "offset": <payload
offset>``; its ``path`` is then the name the capture has as a standalone file (what a pull
writes), and its ``sha256``/``bytes`` are those of the payload, the same standalone ``.npz``.
Entries without a segment are standalone files, as in /1. A /2 index may also name a
*journal*, ``"journal": "index.<n>.journal"``: lines ``{"add": <entry>}`` and ``{"remove":
[ids]}`` appended (and fsynced) since the index was written, applied in order by
:func:`read_index`; a last line without its newline was cut off by a crash and is ignored; a
journal not yet created means no change. Writers write /1 when no entry uses a segment and no
journal is named (pulled and split sets), so older readers still read those.

One capture ``.npz`` (a plain uncompressed ``numpy.savez`` file, no pickles; written by
runtime.contracts.capture.npzfile) holds:

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
(``runtime.fsutil.AtomicFile``; index last; segment records are fsynced before an index
lists them), so a crash leaves the old index and at most an unlisted temp file or segment
tail.

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

from . import segments
from .meta import CAPTURE_SCHEMA, CaptureFormatError, CaptureMeta, jstr  # noqa: F401  (part of this contract)
from .npzfile import npz_bytes

SET_SCHEMA = "edgeship.capture-set/2"
SET_SCHEMA_V1 = "edgeship.capture-set/1"
SET_SCHEMAS = (SET_SCHEMA_V1, SET_SCHEMA)
INDEX = "index.json"
META_KEY = "__meta__"
LABELS_KEY = "__labels__"
OUT_PREFIX = "out:"
SUFFIX = ".npz"
#: the largest index.json read (it is read before anything is trusted)
MAX_INDEX_BYTES = 64 << 20

_SHA = re.compile(r"^[0-9a-f]{64}$")
_JOURNAL = re.compile(r"^index\.[0-9]{1,18}\.journal$")


class CaptureSetRefusedError(CaptureFormatError):
    """Files of a capture set are missing, partial, tampered or unlisted; ``problems`` lists
    ``(path, reason)`` for each, and the message names them."""

    def __init__(self, root: str, problems: list[tuple[str, str]]) -> None:
        self.root = root
        self.problems = problems
        shown = "; ".join(f"{p}: {why}" for p, why in problems[:10])
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__(f"capture set {root}: {len(problems)} file(s) refused: {shown}{more}")


@dataclass(frozen=True)
class Capture:
    """One capture: its meta and tensors (inputs samples along axis 0; outputs as answered)."""

    meta: CaptureMeta
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None


def encode(capture: Capture) -> bytes:
    """The capture's ``.npz`` bytes (see :func:`encode_with_meta`)."""
    return encode_with_meta(capture)[0]


def encode_with_meta(capture: Capture) -> tuple[bytes, str]:
    """The capture's ``.npz`` bytes, and the JSON text of its meta (what ``__meta__`` holds;
    :meth:`IndexEntry.to_text` takes it, so the meta is serialised once).

    Raises:
        CaptureFormatError: a tensor name collides with the reserved keys, or the arrays do not
            agree with the meta (names, sample count, labels).
    """
    m = capture.meta
    _check_arrays(m, capture.inputs, capture.outputs, capture.labels, where=f"capture {m.id}")
    payload: dict[str, np.ndarray] = dict(capture.inputs)
    payload.update({OUT_PREFIX + k: v for k, v in capture.outputs.items()})
    if capture.labels is not None:
        payload[LABELS_KEY] = np.asarray(capture.labels, dtype=np.int64).reshape(-1)
    meta = m.to_text()
    payload[META_KEY] = np.frombuffer(meta.encode(), dtype=np.uint8)
    return npz_bytes(payload), meta


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
_KEYS = {"path", "sha256", "bytes", "meta"}
_SEG_KEYS = _KEYS | {"segment", "offset"}


@dataclass(frozen=True)
class IndexEntry:
    path: str
    sha256: str
    bytes: int
    meta: CaptureMeta
    segment: str | None = None   # the segment file holding it (None: a standalone file at ``path``)
    offset: int = 0              # where its payload starts in the segment

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.to_text())

    def to_text(self, meta_text: str | None = None) -> str:
        """The entry's compact JSON (``meta_text``: its meta's, from :func:`encode_with_meta`)."""
        meta = meta_text if meta_text is not None else self.meta.to_text()
        seg = f',"segment":{jstr(self.segment)},"offset":{self.offset}' if self.segment else ""
        return f'{{"path":{jstr(self.path)},"sha256":"{self.sha256}","bytes":{self.bytes}{seg},"meta":{meta}}}'

    @classmethod
    def of(cls, path: str, data: bytes, meta: CaptureMeta, *, segment: str | None = None,
           offset: int = 0) -> "IndexEntry":
        if segment is not None and not segments.is_segment_name(segment):
            raise CaptureFormatError(f"segment {segment!r} is not a top-level <name>{segments.SEG_SUFFIX}")
        return cls(path=check_path(path), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), meta=meta,
                   segment=segment, offset=offset)


def index_bytes(entry_texts: list[str], *, segmented: bool, journal: str | None = None) -> bytes:
    """An ``index.json`` of entries already serialised (:meth:`IndexEntry.to_text`); schema /2
    when any entry sits in a segment or a journal is named, else /1. ``schema`` first:
    :func:`is_capture_set` recognises a set from the file's first bytes."""
    schema = SET_SCHEMA if segmented or journal else SET_SCHEMA_V1
    tail = f',"journal":{jstr(journal)}' if journal else ""
    return f'{{"schema":"{schema}","files":[{",".join(entry_texts)}]{tail}}}\n'.encode()


def journal_line(*, add: str | None = None, remove: list[str] | None = None) -> bytes:
    """One line of an index journal: an entry added (its :meth:`IndexEntry.to_text`) or ids removed."""
    return (f'{{"add":{add}}}\n' if add is not None else f'{{"remove":{json.dumps(remove)}}}\n').encode()


@dataclass(frozen=True)
class CaptureIndex:
    entries: tuple[IndexEntry, ...] = ()
    journal: str | None = None   # the journal file this index was read with (schema /2)

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.to_bytes())

    def to_bytes(self) -> bytes:
        return index_bytes([e.to_text() for e in self.entries], segmented=any(e.segment for e in self.entries))

    def with_journal(self, data: bytes, *, where: str) -> "CaptureIndex":
        """This index with the journal's lines applied, in order. A last line without its
        newline is one whose append was cut off: ignored. Raises CaptureFormatError."""
        entries = {e.meta.id: e for e in self.entries}
        lines = data.split(b"\n")
        for n, raw in enumerate(lines[:-1]):  # the part after the last newline: a cut-off append
            w = f"{where} line {n + 1}"
            try:
                d = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise CaptureFormatError(f"{w}: not UTF-8 JSON: {e}") from e
            if isinstance(d, dict) and set(d) == {"add"}:
                e = _entry(d["add"], where=w, keysets=(_KEYS, _SEG_KEYS))
                entries[e.meta.id] = e
            elif (isinstance(d, dict) and set(d) == {"remove"} and isinstance(d["remove"], list)
                  and all(isinstance(i, str) for i in d["remove"])):
                for i in d["remove"]:
                    entries.pop(i, None)
            else:
                raise CaptureFormatError(f"{w}: expected {{\"add\": <entry>}} or {{\"remove\": [id strings]}}")
        out = tuple(entries.values())
        if len({e.path for e in out}) != len(out):
            raise CaptureFormatError(f"{where}: duplicate paths")
        return CaptureIndex(out, journal=self.journal)

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> "CaptureIndex":
        """Raises CaptureFormatError (not JSON, wrong schema, bad entries, duplicate paths)."""
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CaptureFormatError(f"{where}: not UTF-8 JSON: {e}") from e
        v2 = isinstance(d, dict) and d.get("schema") == SET_SCHEMA
        if (not isinstance(d, dict) or not isinstance(d.get("schema"), str) or d["schema"] not in SET_SCHEMAS
                or set(d) not in ({"schema", "files"}, {"schema", "files", "journal"} if v2 else None)):
            raise CaptureFormatError(f"{where}: not a capture-set index (schema one of {list(SET_SCHEMAS)}, "
                                     "keys schema, files, and journal for /2)")
        journal = d.get("journal")
        if journal is not None and not (isinstance(journal, str) and _JOURNAL.match(journal)):
            raise CaptureFormatError(f"{where}.journal: {journal!r} is not index.<n>.journal")
        keysets = (_KEYS, _SEG_KEYS) if d["schema"] == SET_SCHEMA else (_KEYS,)
        if not isinstance(d["files"], list):
            raise CaptureFormatError(f"{where}.files: expected a list")
        entries = [_entry(e, where=f"{where}.files[{i}]", keysets=keysets) for i, e in enumerate(d["files"])]
        paths = [e.path for e in entries]
        if len(set(paths)) != len(paths):
            raise CaptureFormatError(f"{where}.files: duplicate paths")
        return cls(entries=tuple(entries), journal=journal)


def _entry(e: Any, *, where: str, keysets: tuple[set, ...]) -> IndexEntry:
    """One index entry from its JSON (``keysets``: the key sets allowed). Raises CaptureFormatError."""
    if not isinstance(e, dict) or set(e) not in keysets:
        raise CaptureFormatError(f"{where}: expected keys path, sha256, bytes, meta"
                                 + (" (and segment, offset)" if len(keysets) > 1 else ""))
    seg, off = e.get("segment"), e.get("offset", 0)
    if "segment" in e and (not segments.is_segment_name(seg) or isinstance(off, bool)
                           or not isinstance(off, int) or off < segments.HEADER.size):
        raise CaptureFormatError(f"{where}: segment must be a top-level <name>{segments.SEG_SUFFIX} and offset "
                                 f"an integer >= {segments.HEADER.size}")
    if not isinstance(e["sha256"], str) or not _SHA.match(e["sha256"]):
        raise CaptureFormatError(f"{where}.sha256: not a lowercase hex sha256")
    if isinstance(e["bytes"], bool) or not isinstance(e["bytes"], int) or e["bytes"] < 0:
        raise CaptureFormatError(f"{where}.bytes: expected an integer >= 0")
    return IndexEntry(path=check_path(e["path"], where=f"{where}.path"), sha256=e["sha256"], bytes=e["bytes"],
                      meta=CaptureMeta.from_json(e["meta"], where=f"{where}.meta"), segment=seg, offset=off)


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
    return any(s.encode() in head for s in SET_SCHEMAS)


def set_of(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(set root, index path)`` of a capture file inside a capture set (one or two levels
    below its index), or None."""
    p = Path(path)
    for root, rel in ((p.parent, p.name), (p.parent.parent, f"{p.parent.name}/{p.name}")):
        if is_capture_set(root):
            return root, rel
    return None


def read_index(root: str | os.PathLike) -> CaptureIndex:
    """Read ``<root>/index.json`` and the journal it names (applied). Raises CaptureFormatError
    (missing, too large, malformed)."""
    p = Path(root) / INDEX
    try:
        if p.stat().st_size > MAX_INDEX_BYTES:
            raise CaptureFormatError(f"{p}: larger than {MAX_INDEX_BYTES} bytes")
        data = p.read_bytes()
    except FileNotFoundError:
        raise CaptureFormatError(f"{root}: no {INDEX} (not a capture set)") from None
    except OSError as e:
        raise CaptureFormatError(f"{p}: cannot read: {e}") from e
    index = CaptureIndex.from_bytes(data, where=str(p))
    if index.journal is None:
        return index
    j = Path(root) / index.journal
    try:
        if j.stat().st_size > MAX_INDEX_BYTES:
            raise CaptureFormatError(f"{j}: larger than {MAX_INDEX_BYTES} bytes")
        data = j.read_bytes()
    except FileNotFoundError:
        return index  # named before its first line: nothing changed since the index
    except OSError as e:
        raise CaptureFormatError(f"{j}: cannot read: {e}") from e
    return index.with_journal(data, where=str(j))


def listed_files(root: Path) -> set[str]:
    """Every ``.npz`` under ``root`` (two levels), as index paths."""
    out = {p.name for p in root.glob(f"*{SUFFIX}") if p.is_file()}
    out |= {f"{p.parent.name}/{p.name}" for p in root.glob(f"*/*{SUFFIX}") if p.is_file()}
    return out


def segment_files(root: Path) -> set[str]:
    """Every segment file at the top of ``root``."""
    return {p.name for p in root.glob(f"*{segments.SEG_SUFFIX}") if p.is_file()}


def read_entry(root: Path, entry: IndexEntry) -> bytes:
    """The bytes an entry lists: its standalone file, or its payload range in its segment (a
    cut-off segment gives fewer bytes: :func:`verify_entry` calls that partial). Raises OSError."""
    if entry.segment is None:
        return (root / entry.path).read_bytes()
    with open(root / entry.segment, "rb") as f:
        f.seek(entry.offset)
        return f.read(entry.bytes)


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
        name = e.path if e.segment is None else f"{e.path} (in {e.segment})"
        try:
            data = read_entry(root, e)
        except FileNotFoundError:
            problems.append((name, "missing"))
            continue
        except OSError as err:
            problems.append((name, f"unreadable: {err}"))
            continue
        why = verify_entry(e, data)
        if why:
            problems.append((name, why))
    unlisted = sorted(listed_files(root) - {e.path for e in index.entries if e.segment is None})
    unlisted += sorted(segment_files(root) - {e.segment for e in index.entries if e.segment})
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
            data = read_entry(root, e)
            why = verify_entry(e, data)
            if why:
                raise CaptureSetRefusedError(str(root), [(e.path, why)])
            yield e, decode(data, where=e.path)

    return gen()
