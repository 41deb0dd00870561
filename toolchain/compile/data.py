"""Calibration and validation data: load, check against the model's inputs, hash, save.

Accepted sources (``--calibration`` / ``--validation``):

* ``file.npz`` -- one array per model input, keyed by input name, samples along axis 0
  (the model's batch axis moved to the front; an input without a batch axis, such as a
  scalar, holds one whole tensor per sample: see :mod:`toolchain.compile.samples`); an
  optional ``__labels__`` array of integer class labels;
* ``file.npy`` -- one array, for single-input models;
* a directory of ``.npz``/``.npy`` files -- concatenated in sorted file-name order;
* a capture set pulled from devices (a directory with a capture-set ``index.json``,
  :mod:`runtime.contracts.capture.fileformat`) -- every file verified against the index first
  (a missing, partial, tampered or unlisted file is refused, named), the captured inputs in
  index order, ``__labels__`` when every capture carries labels (:mod:`toolchain.data.captures`);
  one capture ``.npz`` given alone is checked against the index beside it;
* ``file.py:fn`` -- a zero-argument callable returning a dict like an ``.npz`` (or a list of
  such dicts, one per batch).

Labels (``--labels``): a ``.npy`` file, or ``file.npz:key``; else ``__labels__`` in the data.

Everything is checked against the model's inputs (:func:`check_arrays`) before any work, and a
mismatch raises :class:`toolchain.errors.DataError` that says what was expected.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.contracts.capture import fileformat as ff
from runtime.spec import TensorSpec, is_dynamic, tie_name
from toolchain.compile.context import Feeds, SampleSet
from toolchain.compile.samples import Arrays, Layout
from toolchain.errors import DataError

LABELS_KEY = "__labels__"


def load_arrays(source: str | Path | Callable[[], Any]) -> Arrays:
    """Read a data source into ``{name: array[N, ...]}`` (labels under ``__labels__``).

    Raises: DataError (missing file, unreadable file, callable failed or returned the wrong type).
    """
    if callable(source):
        return _from_callable(source, label=getattr(source, "__name__", "callable"))
    text = str(source)
    if ".py:" in text:
        path, fn = text.rsplit(":", 1)
        return _from_callable(_load_callable(Path(path), fn), label=text)
    path = Path(text)
    if path.is_dir() and ff.is_capture_set(path):
        return _captured(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise DataError(f"{path}: directory holds no .npz or .npy files")
        return _concat([_read_file(p) for p in files], label=str(path))
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    return _read_file(path)


def _read_file(path: Path) -> Arrays:
    try:
        if path.suffix == ".npz":
            if ff.set_of(path) is not None:  # one file of a capture set: checked against its index
                return _captured(path)
            with np.load(path, allow_pickle=False) as z:
                if ff.META_KEY in z.files:  # a device capture without its index
                    return _captured(path)
                return {k: z[k] for k in z.files}
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}  # "" = the single model input
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    raise DataError(f"{path}: expected a .npz or .npy file")


def _captured(path: Path) -> Arrays:
    """A capture set (a directory) or one capture file, verified (toolchain.data.captures)."""
    from toolchain.data import captures

    try:
        return captures.capture_arrays(path) if path.is_dir() else captures.capture_file_arrays(path)
    except ff.CaptureFormatError as e:
        raise DataError(f"capture data refused: {e}") from e


def provenance(source: Any) -> dict[str, Any] | None:
    """The capture set a data source comes from, for the manifest's ``data_provenance``
    (None when the source is not a capture-set directory)."""
    if not isinstance(source, (str, Path)) or ".py:" in str(source) or not ff.is_capture_set(source):
        return None
    from toolchain.data import captures

    try:
        return captures.provenance(source)
    except ff.CaptureFormatError as e:
        raise DataError(f"capture data refused: {e}") from e


def _load_callable(path: Path, fn: str) -> Callable[[], Any]:
    from toolchain.compile.source import _import_file
    from toolchain.errors import SourceError

    try:
        mod = _import_file(path)
    except SourceError as e:
        raise DataError(str(e)) from e
    f = getattr(mod, fn, None)
    if not callable(f):
        raise DataError(f"{path}: no callable {fn!r}")
    return f


def _from_callable(fn: Callable[[], Any], *, label: str) -> Arrays:
    try:
        res = fn()
    except Exception as e:
        raise DataError(f"{label}: the data callable raised {type(e).__name__}: {e}") from e
    if isinstance(res, Mapping):
        return {str(k): np.asarray(v) for k, v in res.items()}
    if isinstance(res, (list, tuple)) and res and all(isinstance(r, Mapping) for r in res):
        return _concat([{str(k): np.asarray(v) for k, v in r.items()} for r in res], label=label)
    raise DataError(f"{label}: a data callable must return a dict of arrays (or a list of them), got {type(res).__name__}")


def _concat(parts: list[Arrays], *, label: str) -> Arrays:
    keys = set(parts[0])
    for p in parts[1:]:
        if set(p) != keys:
            raise DataError(f"{label}: files disagree on array names: {sorted(keys)} vs {sorted(p)}")
    try:
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    except ValueError as e:
        raise DataError(f"{label}: arrays cannot be concatenated along the sample axis: {e}") from e


def load_labels(spec: str) -> np.ndarray:
    """Labels from ``file.npy`` or ``file.npz:key``. Raises DataError."""
    path, _, key = spec.partition(".npz:")
    if key:
        arrays = _read_file(Path(path + ".npz"))
        if key not in arrays:
            raise DataError(f"{path}.npz: no array {key!r} (has {sorted(arrays)})")
        return arrays[key]
    arrays = load_arrays(spec)
    if len(arrays) != 1:
        raise DataError(f"{spec}: a labels file must hold one array, or name it as file.npz:key")
    return next(iter(arrays.values()))


def check_arrays(arrays: Arrays, inputs: Sequence[TensorSpec], *, role: str, source: str,
                 layout: Layout | None = None) -> tuple[Arrays, np.ndarray | None]:
    """Match stored arrays (samples along axis 0, see :mod:`toolchain.compile.samples`) to the
    model inputs by name, dtype and per-sample shape.

    Returns ``(stored_by_input_name, labels_or_None)``.

    Raises: DataError saying what the model expects, in the same terms as the data it got.
    """
    layout = layout or Layout.of(inputs)
    arrays = dict(arrays)
    labels = arrays.pop(LABELS_KEY, None)
    if "" in arrays:  # a bare .npy
        if len(inputs) != 1:
            raise DataError(f"{role} data {source}: a .npy file only fits a single-input model; "
                            f"this model has inputs {[s.name for s in inputs]}: use a .npz keyed by input name")
        arrays = {inputs[0].name: arrays.pop("")}
    want = {s.name for s in inputs}
    if set(arrays) != want:
        raise DataError(
            f"{role} data {source}: arrays {sorted(arrays)} do not match the model inputs {_expect(inputs, layout)}"
            + (f"; missing {sorted(want - set(arrays))}" if want - set(arrays) else "")
            + (f"; unexpected {sorted(set(arrays) - want)}" if set(arrays) - want else "")
        )
    counts = set()
    for s in inputs:
        a = arrays[s.name]
        per = TensorSpec(s.name, s.dtype, layout.stored_shape(s))
        ok_shape = a.ndim == len(per.shape) + 1 and per.accepts_shape(tuple(a.shape[1:]))
        if a.dtype != np.dtype(s.dtype) or not ok_shape:
            raise DataError(
                f"{role} data {source}: input {s.name!r} is {a.dtype}{list(a.shape)}, the model expects "
                f"{_stored(s, layout)}"
                + (f"; convert with .astype(np.{s.dtype})" if a.dtype != np.dtype(s.dtype) else "")
            )
        counts.add(a.shape[0])
    if len(counts) != 1:
        raise DataError(f"{role} data {source}: inputs hold different sample counts {sorted(counts)}")
    _check_shared_dims(arrays, inputs, layout, role=role, source=source)
    n = counts.pop()
    if n == 0:
        raise DataError(f"{role} data {source}: no samples")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{role} data {source}: labels must be {n} integers, got {labels.dtype}{list(labels.shape)}")
    return arrays, labels


def _check_shared_dims(arrays: Arrays, inputs: Sequence[TensorSpec], layout: Layout, *, role: str, source: str) -> None:
    """A dim named on several inputs (e.g. ``seq``) must have one size across them; placeholders
    (``'?'``, unnamed) tie nothing (see :func:`runtime.spec.tie_name`)."""
    seen: dict[str, tuple[str, int]] = {}
    for s in inputs:
        for axis, d in enumerate(layout.stored_shape(s), start=1):
            name = tie_name(d)
            if name is None:
                continue
            size = int(arrays[s.name].shape[axis])
            first = seen.setdefault(name, (s.name, size))
            if first[1] != size:
                raise DataError(
                    f"{role} data {source}: dim {name!r} is {first[1]} in input {first[0]!r} but {size} in input "
                    f"{s.name!r}; the model ties them together ({_expect(inputs, layout)})")


def _stored(s: TensorSpec, layout: Layout) -> str:
    """What the data must hold for input ``s``, e.g. ``int64[N] (N samples along axis 0; one scalar each)``."""
    per = TensorSpec(s.name, s.dtype, ("N",) + layout.stored_shape(s)).describe()
    b = layout.axis(s.name)
    if not s.shape:
        return f"{per} (N samples along axis 0; the model input is a scalar)"
    if b is None:
        return f"{per} (N samples along axis 0; each sample is the whole {s.describe()} input, which has no batch axis)"
    if b != 0:
        return f"{per} (N samples along axis 0; the model's batch axis {b} of {s.describe()} moved to the front)"
    return f"{per} (N samples along axis 0)"


def _expect(inputs: Sequence[TensorSpec], layout: Layout) -> str:
    return ", ".join(f"{s.name}: {TensorSpec(s.name, s.dtype, ('N',) + layout.stored_shape(s)).describe()}"
                     for s in inputs)


def arrays_sha256(arrays: Mapping[str, np.ndarray], labels: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype}|{a.shape}".encode())
        h.update(a.tobytes())
    if labels is not None:
        h.update(b"labels")
        h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def to_sample_set(arrays: Arrays, labels: np.ndarray | None, *, layout: Layout, source: str,
                  limit: int | None = None, random: bool = False) -> SampleSet:
    """Split stored arrays into single-sample model feeds (first ``limit`` samples)."""
    n = len(next(iter(arrays.values())))
    if limit is not None:
        n = min(n, limit)
        arrays = {k: v[:n] for k, v in arrays.items()}
        labels = None if labels is None else labels[:n]
    samples: list[Feeds] = [layout.feeds(arrays, i, i + 1) for i in range(n)]
    return SampleSet(samples=samples, labels=labels, source=source, sha256=arrays_sha256(arrays, labels),
                     random=random, layout=layout)


def load_sample_set(source: str | Path | Callable[[], Any], *, inputs: Sequence[TensorSpec], role: str,
                    layout: Layout | None = None, labels: str | None = None, limit: int | None = None) -> SampleSet:
    """Load, check and split a data source. Raises DataError."""
    layout = layout or Layout.of(inputs)
    label = source if isinstance(source, (str, Path)) else f"{getattr(source, '__module__', '')}:{getattr(source, '__name__', 'callable')}"
    arrays = load_arrays(source)
    if labels is not None:
        arrays[LABELS_KEY] = load_labels(labels)
    feeds, labs = check_arrays(arrays, inputs, role=role, source=str(label), layout=layout)
    return to_sample_set(feeds, labs, layout=layout, source=str(label), limit=limit)


def random_sample_set(inputs: Sequence[TensorSpec], *, n: int, layout: Layout | None = None, seed: int = 0,
                      example_shapes: Mapping[str, Sequence[int]] | None = None) -> SampleSet:
    """Random samples matching the inputs (standard normal floats; ints in [0, 2)). Only behind
    an explicit user flag: calibrating on noise gives poor int8 scales.

    Dynamic dims take their size from ``example_shapes`` (the example inputs, or
    ``--input-shape``); the batch axis is 1.

    Raises:
        DataError: a dynamic dim has no known size (the message names ``--input-shape``).
    """
    layout = layout or Layout.of(inputs)
    rng = np.random.default_rng(seed)
    arrays: Arrays = {}
    for s in inputs:
        shape = (n,) + sample_shape(s, layout, example_shapes or {})
        if np.issubdtype(np.dtype(s.dtype), np.floating):
            arrays[s.name] = rng.standard_normal(shape).astype(s.dtype)
        else:
            arrays[s.name] = rng.integers(0, 2, size=shape).astype(s.dtype)
    return to_sample_set(arrays, None, layout=layout, source="random", random=True)


def sample_shape(s: TensorSpec, layout: Layout, example_shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The stored per-sample shape of ``s`` with every dynamic dim given a size.

    Raises: DataError naming the dims without a known size and the flag that gives one.
    """
    b = layout.axis(s.name)
    ex = tuple(example_shapes.get(s.name) or ())
    if ex and len(ex) != len(s.shape):
        raise DataError(f"--input-shape {s.name}={','.join(map(str, ex))}: rank {len(ex)}, the model's input "
                        f"{s.name!r} is {s.describe()} (rank {len(s.shape)})")
    out, unknown = [], []
    for axis, d in enumerate(s.shape):
        if axis == b:
            continue
        if not is_dynamic(d):
            out.append(int(d))
        elif ex:
            out.append(int(ex[axis]))
        else:
            out.append(0)
            unknown.append(f"{axis} ({d if d is not None else '?'})")
    if unknown:
        hint = ",".join("1" if i == b else (str(d) if not is_dynamic(d) else "SIZE") for i, d in enumerate(s.shape))
        raise DataError(f"input {s.name!r} {s.describe()}: no size is known for dynamic dim(s) {', '.join(unknown)} "
                        f"to generate random data at; pass --input-shape {s.name}={hint} with sizes the model "
                        "takes, or real data with --calibration/--validation")
    return tuple(out)


def stack(ss: SampleSet) -> Arrays:
    """Samples back into stored arrays ``{name: [N, ...]}``."""
    return (ss.layout or Layout.LEADING).to_stored(list(ss.samples))


def npz_bytes(arrays: Mapping[str, np.ndarray], labels: np.ndarray | None) -> bytes:
    """Deterministic-content ``.npz`` bytes (``__labels__`` when labelled)."""
    buf = io.BytesIO()
    payload = dict(arrays)
    if labels is not None:
        payload[LABELS_KEY] = labels
    np.savez(buf, **payload)
    return buf.getvalue()
