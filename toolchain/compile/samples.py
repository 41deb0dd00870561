"""How samples map to model feeds: batch axes, the stored layout, running in chunks.

Stored layout (data files, ``data/validation.npz``, every ``Arrays`` the pipeline passes
around): **samples along axis 0**. For an input with a batch axis ``b`` the stored array is
the model tensor with its batch axis moved to the front (``state [2, B, 128]`` is stored
``[N, 2, 128]``); an input without one (a scalar such as Silero's ``sr``, or an input whose
axes are all fixed or named) is stored ``[N, *shape]`` and each sample carries it whole.

Model feeds of one sample (a :class:`~toolchain.compile.context.SampleSet` entry, what
calibration readers hand an engine) have the batch axis of size 1 in its place.

Outputs are laid out the same way for scoring: ``[N, ...]``. Chunks of several samples run
only when every input has a dynamic batch axis and every output a dynamic leading dim; the
outputs are concatenated along axis 0 when each run returns that many rows, else each sample
runs alone and its outputs are stacked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from runtime.spec import TensorSpec, batch_axes, contiguous, is_dynamic

Arrays = dict[str, np.ndarray]
Feeds = dict[str, np.ndarray]
#: samples per run when the model takes a batch
CHUNK = 64


@dataclass(frozen=True)
class Layout:
    """The batch axis of each input (None: no batch axis, fed whole per sample); inputs not
    listed have ``default`` (:attr:`LEADING`: axis 0 for every input, for hand-made sets)."""

    batch_axes: Mapping[str, int | None]
    default: int | None = None

    def axis(self, name: str) -> int | None:
        return self.batch_axes.get(name, self.default)

    def to_json(self) -> dict[str, int | None]:
        return dict(self.batch_axes)

    @classmethod
    def of(cls, specs: Sequence[TensorSpec], declared: Mapping[str, int | None] | None = None) -> "Layout":
        return cls(batch_axes=batch_axes(specs, declared))

    def stored_shape(self, spec: TensorSpec) -> tuple:
        """Per-sample shape as stored (the batch axis removed), e.g. ``(2, 128)`` for ``state``."""
        b = self.axis(spec.name)
        return tuple(spec.shape) if b is None else tuple(d for i, d in enumerate(spec.shape) if i != b)

    def feeds(self, stored: Mapping[str, np.ndarray], start: int, stop: int) -> Feeds:
        """Model feeds for samples ``start:stop`` (more than one only for :meth:`batchable` models)."""
        out = {}
        for name, a in stored.items():
            b = self.axis(name)
            if b is None:
                if stop - start != 1:
                    raise ValueError(f"input {name!r} has no batch axis: run one sample at a time")
                out[name] = contiguous(a[start])
            else:
                out[name] = contiguous(np.moveaxis(a[start:stop], 0, b))
        return out

    def to_stored(self, samples: Sequence[Mapping[str, np.ndarray]]) -> Arrays:
        """Model feeds of single samples back into stored arrays ``[N, ...]``."""
        out = {}
        for name in samples[0]:
            b = self.axis(name)
            if b is None:
                out[name] = np.stack([np.asarray(s[name]) for s in samples])
            else:
                out[name] = np.concatenate([np.moveaxis(np.asarray(s[name]), b, 0) for s in samples])
        return out

    def split(self, stored: Mapping[str, np.ndarray]) -> list[Feeds]:
        n = count(stored)
        return [self.feeds(stored, i, i + 1) for i in range(n)]

    def batchable(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
        """True when samples can run several at a time (see the module docstring)."""
        for s in inputs:
            b = self.axis(s.name)
            if b is None or not is_dynamic(s.shape[b]):
                return False
        return all(o.shape and is_dynamic(o.shape[0]) for o in outputs)


Layout.LEADING = Layout(batch_axes={}, default=0)  # type: ignore[attr-defined]


def count(stored: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(stored.values())))


def run_samples(run: Callable[[Feeds], Mapping[str, np.ndarray]], stored: Mapping[str, np.ndarray], *,
                layout: Layout, names: Sequence[str], batched: bool,
                on_chunk: Callable[[int, int], None] | None = None, stats: dict | None = None) -> Arrays:
    """Run every stored sample through ``run``; outputs by name, samples along axis 0.

    ``run`` raises what the engine raises; ``on_chunk(start, stop)`` is told each range before it
    runs (so a failure can name the samples); ``stats["batch"]`` gets the largest batch run.
    """
    n = count(stored)
    stats = {} if stats is None else stats
    if batched and n > 1:
        chunks = _run_chunked(run, stored, layout=layout, names=names, n=n, on_chunk=on_chunk)
        if chunks is not None:
            stats["batch"] = min(n, CHUNK)
            return chunks
    stats["batch"] = 1
    per = []
    for i in range(n):
        if on_chunk:
            on_chunk(i, i + 1)
        res = run(layout.feeds(stored, i, i + 1))
        per.append({k: np.asarray(res[k]) for k in names})
    return {k: _join([p[k] for p in per]) for k in names}


def _run_chunked(run, stored, *, layout, names, n, on_chunk) -> Arrays | None:
    """Chunks of :data:`CHUNK`; None when an output's leading dim is not the chunk's size."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for i in range(0, n, CHUNK):
        stop = min(n, i + CHUNK)
        if on_chunk:
            on_chunk(i, stop)
        res = run(layout.feeds(stored, i, stop))
        for k in names:
            a = np.asarray(res[k])
            if a.ndim == 0 or a.shape[0] != stop - i:
                return None
            parts[k].append(a)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _join(per_sample: list[np.ndarray]) -> np.ndarray:
    """One run's outputs per sample -> ``[N, ...]``: concatenated when each has one leading row."""
    if all(a.ndim >= 1 and a.shape[0] == 1 for a in per_sample):
        return np.concatenate(per_sample)
    return np.stack(per_sample)


def resize_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``a`` cut or wrapped (repeated from the start) along ``axis`` to ``size``.

    Wrapping keeps real values (token ids stay in the vocabulary, masks stay 0/1, pixels keep
    their statistics), so a sample at another size is still a plausible input.
    """
    idx = np.arange(size) % a.shape[axis]
    return np.take(a, idx, axis=axis)
