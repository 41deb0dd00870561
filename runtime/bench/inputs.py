"""Benchmark inputs: real validation samples when the build has them, else seeded random data.

Feeds are built once, before timing, and cycled in a fixed order (MLPerf's preloaded
``performance_sample_count``): input generation is never inside the timed region.

Samples are stored as a build's ``data/validation.npz`` holds them: **samples along axis 0**,
an input's batch axis moved to the front (``state [2, B, 128]`` is stored ``[N, 2, 128]``);
an input without a batch axis (a scalar such as Silero's ``sr``, an axis-0 dim that is fixed
and not 1) is stored ``[N, *shape]`` and fed whole, the same tensor for every row of a batch.
Batch axes come from the manifest (``io.inputs[].batch_axis``) where the caller has it, else
from the dims (:func:`runtime.spec.find_batch_axis`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..spec import TensorSpec, batch_axes as find_batch_axes, contiguous, is_dynamic
from .errors import (
    BatchShapeError, DynamicDimError, InputDataError, InputShapeError, UnsizedDimError,
)

Feeds = dict[str, np.ndarray]
BatchAxes = Mapping[str, "int | None"]


def resolve_batch_axes(specs: Sequence[TensorSpec], batch_axes: BatchAxes | None) -> dict[str, int | None]:
    """The batch axis of every input: the declared one (a manifest's), else found from its dims."""
    return find_batch_axes(specs, batch_axes)



def check_batch(specs: Sequence[TensorSpec], batch: int, batch_axes: BatchAxes | None = None) -> None:
    """Raise BatchShapeError when an input's batch axis is fixed at another size than ``batch``.

    Inputs without a batch axis are fed whole and never block a batch size.
    """
    for s in specs:
        b = resolve_batch_axes(specs, batch_axes)[s.name]
        if b is None:
            continue
        d = s.shape[b]
        if not is_dynamic(d) and d != batch:
            raise BatchShapeError(
                f"input {s.name!r} has a fixed shape {list(s.shape)} (batch axis {b} is {d}): batch {batch} "
                f"does not fit; benchmark batch {d} or export the model with a dynamic batch axis"
            )


def stored_shape(s: TensorSpec, b: int | None) -> tuple:
    return tuple(s.shape) if b is None else tuple(d for i, d in enumerate(s.shape) if i != b)


def load_validation(path: str | Path, specs: Sequence[TensorSpec],
                    batch_axes: BatchAxes | None = None) -> dict[str, np.ndarray]:
    """Per-sample arrays ``[N, *stored shape]`` by input name from a validation .npz.

    Also accepts one batch-1 sample per row (``[N, 1, ...]``) for inputs batched on axis 0.

    Raises:
        InputDataError: file missing/corrupt, an input missing, or a rank mismatch.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise InputDataError(f"{p}: validation inputs file not found") from e
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputDataError(f"{p}: cannot read validation inputs ({e})") from e
    axes = resolve_batch_axes(specs, batch_axes)
    out: dict[str, np.ndarray] = {}
    n = None
    for s in specs:
        if s.name not in data:
            raise InputDataError(f"{p}: no array for input {s.name!r} (has {sorted(data)})")
        a = data[s.name]
        rank = len(stored_shape(s, axes[s.name])) + 1
        if axes[s.name] == 0 and a.ndim == rank + 1 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != rank:
            raise InputDataError(f"{p}: input {s.name!r} has shape {list(a.shape)}; samples of the model's "
                                 f"{s.describe()} are stored with rank {rank} (samples along axis 0)")
        if a.dtype != np.dtype(s.dtype):
            a = a.astype(s.dtype)
        out[s.name] = a
        n = len(a) if n is None else min(n, len(a))
    if not n:
        raise InputDataError(f"{p}: no validation samples")
    return {k: v[:n] for k, v in out.items()}


def random_sample_arrays(specs: Sequence[TensorSpec], *, count: int, seed: int,
                         batch_axes: BatchAxes | None = None,
                         shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Seeded random per-sample arrays ``[count, *stored shape]`` matching the IO spec.

    A dynamic dim other than the batch takes its size from ``shapes`` (an example shape per
    input); there is no generic default, since a size the model cannot take (16x16 into a
    network that pools 32x) would only fail inside the engine.

    Raises:
        InputDataError: a dynamic dim with no size (names it), or a dtype random data cannot fill.
    """
    rng = np.random.default_rng(seed)
    axes = resolve_batch_axes(specs, batch_axes)
    out = {}
    for s in specs:
        shape = (count,) + _sample_shape(s, axes[s.name], (shapes or {}).get(s.name))
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            out[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu" and dt.itemsize == 1:  # raw (u)int8 tensors: their whole range
            info = np.iinfo(dt)
            out[s.name] = rng.integers(info.min, info.max + 1, size=shape, dtype=dt)
        elif dt.kind in "iu":
            # wider ints are usually indices (token ids, positions): 0/1 are valid for any
            # embedding table, negative or large values are not (as in `edgeship compile`)
            out[s.name] = rng.integers(0, 2, size=shape, dtype=dt)
        elif dt.kind == "b":
            out[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputDataError(f"cannot generate random data for input {s.name!r} of dtype {s.dtype}")
    return out


def _sample_shape(s: TensorSpec, b: int | None, example: Sequence[int] | None) -> tuple[int, ...]:
    dims, unknown = [], []
    for axis, d in enumerate(s.shape):
        if axis == b:
            continue
        if not is_dynamic(d):
            dims.append(int(d))
        elif example is not None and len(example) == len(s.shape):
            dims.append(int(example[axis]))
        else:
            unknown.append(f"{axis} ({'?' if d is None or isinstance(d, int) else d})")
    if unknown:
        raise UnsizedDimError(
            f"input {s.name!r} {s.describe()}: no size is known for dynamic dim(s) {', '.join(unknown)}, and a "
            f"guessed one may not fit the model; pass `--input-shape {s.name}={_hint(s, b)}` with sizes the model "
            "takes (N), or benchmark a build (its validation data has the sizes)")
    return tuple(dims)


def _hint(s: TensorSpec, b: int | None) -> str:
    """The flag's value to fill in: fixed dims as they are, the batch axis 1, other dynamic dims N."""
    return ",".join("1" if i == b else str(d) if not is_dynamic(d) else "N" for i, d in enumerate(s.shape))


def check_input_shapes(specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]] | None) -> None:
    """Every example shape names an input of the model, has its rank and keeps its fixed dims.

    Raises:
        InputShapeError: naming the input, the shape given and the model's.
    """
    by_name = {s.name: s for s in specs}
    for name, shape in (shapes or {}).items():
        s = by_name.get(name)
        given = f"--input-shape {name}={','.join(map(str, shape))}"
        if s is None:
            raise InputShapeError(f"{given}: the model has no input {name!r} (inputs: {sorted(by_name)})")
        if len(shape) != len(s.shape):
            raise InputShapeError(f"{given}: rank {len(shape)}, the model's input is {s.describe()} "
                                  f"(rank {len(s.shape)})")
        fixed = [f"axis {i} is {d}" for i, (d, g) in enumerate(zip(s.shape, shape)) if not is_dynamic(d) and d != g]
        if fixed:
            raise InputShapeError(f"{given}: the model's input is {s.describe()} ({', '.join(fixed)})")


def feed_pool(samples: dict[str, np.ndarray], specs: Sequence[TensorSpec], *, batch: int,
              pool: int, batch_axes: BatchAxes | None = None) -> list[Feeds]:
    """``pool`` batches of ``batch`` consecutive samples (wrapping), contiguous, ready to run.

    An input without a batch axis is fed whole: the first sample of each batch.
    """
    check_batch(specs, batch, batch_axes)
    axes = resolve_batch_axes(specs, batch_axes)
    n = min(len(v) for v in samples.values())
    distinct = max(1, min(pool, n // batch))  # no two batches repeat the same samples
    feeds = []
    for i in range(distinct):
        idx = [(i * batch + j) % n for j in range(batch)]
        feed = {}
        for s in specs:
            b = axes[s.name]
            a = samples[s.name]
            feed[s.name] = contiguous(a[idx[0]] if b is None else np.moveaxis(a[idx], 0, b))
        feeds.append(feed)
    return feeds


def explain_failure(e: BaseException, feed: Feeds, specs: Sequence[TensorSpec]) -> BaseException:
    """The error to raise when the first run of ``feed`` failed with ``e``: for a model with
    dynamic dims, a :class:`DynamicDimError` naming them and the sizes they were given (not a
    cell with the engine's traceback); else ``e`` itself."""
    from ..errors import InferenceError

    if not isinstance(e, InferenceError):
        return e
    sized = [f"{s.name}:{axis} ({d if isinstance(d, str) else '?'})={np.shape(feed[s.name])[axis]}"
             for s in specs for axis, d in enumerate(s.shape) if is_dynamic(d) and s.name in feed]
    if not sized:
        return e
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return DynamicDimError(
        f"the model declares dynamic dims but fails at {', '.join(sized)}: {first[:300]}; benchmark it at "
        "sizes it takes (--input-shape NAME=d0,d1,..., a build's validation data, or another --batch)")
