"""Benchmark inputs: real validation samples when the build has them, else seeded random data.

Feeds are built once, before timing, and cycled in a fixed order (MLPerf's preloaded
``performance_sample_count``): input generation is never inside the timed region.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..spec import TensorSpec, contiguous
from .errors import BatchShapeError, InputDataError

Feeds = dict[str, np.ndarray]


def check_batch(specs: Sequence[TensorSpec], batch: int) -> None:
    """Raise BatchShapeError when an input's fixed leading dim cannot take ``batch``."""
    for s in specs:
        if not s.shape:
            continue
        d0 = s.shape[0]
        if isinstance(d0, int) and d0 >= 0 and d0 != batch:
            raise BatchShapeError(
                f"input {s.name!r} has a fixed shape {list(s.shape)}: batch {batch} does not fit; "
                f"benchmark batch {d0} or export the model with a dynamic batch axis"
            )


def load_validation(path: str | Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Per-sample arrays ``[N, *sample_shape]`` by input name from a validation .npz.

    Accepts arrays stacked along the batch axis (``[N, ...]`` with the model's rank) or one
    batch-1 sample per row (``[N, 1, ...]``).

    Raises:
        InputDataError: file missing/corrupt, an input missing, or a rank/dtype mismatch.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise InputDataError(f"{p}: validation inputs file not found") from e
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputDataError(f"{p}: cannot read validation inputs ({e})") from e
    out: dict[str, np.ndarray] = {}
    n = None
    for s in specs:
        if s.name not in data:
            raise InputDataError(f"{p}: no array for input {s.name!r} (has {sorted(data)})")
        a = data[s.name]
        rank = len(s.shape)
        if a.ndim == rank + 1 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != rank:
            raise InputDataError(f"{p}: input {s.name!r} has shape {list(a.shape)}, model rank is {rank}")
        if a.dtype != np.dtype(s.dtype):
            a = a.astype(s.dtype)
        out[s.name] = a
        n = len(a) if n is None else min(n, len(a))
    if not n:
        raise InputDataError(f"{p}: no validation samples")
    return {k: v[:n] for k, v in out.items()}


def random_sample_arrays(specs: Sequence[TensorSpec], *, count: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random per-sample arrays ``[count, *sample_shape]`` matching the IO spec."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        shape = (count,) + tuple(s.concrete_shape(batch=1)[1:]) if s.shape else (count,)
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


def feed_pool(samples: dict[str, np.ndarray], specs: Sequence[TensorSpec], *, batch: int,
              pool: int) -> list[Feeds]:
    """``pool`` batches of ``batch`` consecutive samples (wrapping), contiguous, ready to run."""
    check_batch(specs, batch)
    n = min(len(v) for v in samples.values())
    distinct = max(1, min(pool, n // batch))  # no two batches repeat the same samples
    feeds = []
    for i in range(distinct):
        idx = [(i * batch + j) % n for j in range(batch)]
        feeds.append({s.name: contiguous(samples[s.name][idx]) for s in specs})
    return feeds
