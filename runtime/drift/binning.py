"""The one binning definition of drift: quantile edges, bin index, per-feature layout, PSI.

A value ``x`` falls in bin ``searchsorted(edges, x, side="left")`` (bin 0: ``x <= edges[0]``;
the last bin: ``x > edges[-1]``). Ties are kept consistent because the baseline's
proportions are computed with this same function on the validation data.

PSI (population stability index) of reference shares ``p`` and live shares ``q`` is
``sum((q - p) * ln(q / p))``, both floored at :data:`EPS` so an empty bin stays finite:
:func:`psi` (plain Python, for the few distributions judged at every check) and
:class:`Segments` (vectorized, for the per-feature distributions), the same figure.
"""

from __future__ import annotations

import math

import numpy as np

#: bins of a distribution (deciles); fewer when the data has ties
N_BINS = 10
#: a tensor whose per-sample size (or channel count) is at most this gets per-feature PSI
MAX_FEATURES = 64
EPS = 1e-4


def quantile_edges(x: np.ndarray, bins: int = N_BINS) -> np.ndarray:
    """Inner cut points at the ``bins``-quantiles of the finite values of ``x`` (unique, sorted)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_counts(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Counts per bin (``len(edges) + 1``) of the finite values of ``x``."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)


def feature_layout(sample_shape: tuple[int, ...]) -> str | None:
    """``"flat"`` (every element of a sample is a feature), ``"channel"`` (axis 1 of the tensor),
    or None (no per-feature view: the tensor is too big, or a sample is a single value)."""
    size = int(np.prod(sample_shape)) if sample_shape else 1
    if 1 < size <= MAX_FEATURES:
        return "flat"
    if len(sample_shape) >= 2 and 1 < sample_shape[0] <= MAX_FEATURES:
        return "channel"
    return None


def feature_rows(x: np.ndarray, layout: str) -> np.ndarray:
    """``x`` (samples along axis 0) as rows of features: (n, features)."""
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if layout == "flat":
        return a.reshape(a.shape[0], -1)
    return np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])


def psi(reference, counts) -> float:
    """PSI of live ``counts`` against ``reference`` shares (0.0 when there are no counts). Plain
    Python over the bins: for the few distributions judged at every check this beats a dozen
    numpy calls (:class:`Segments` is the same figure for many distributions at once)."""
    counts = counts.tolist() if hasattr(counts, "tolist") else counts
    reference = reference.tolist() if hasattr(reference, "tolist") else reference
    n = float(sum(counts))
    if n <= 0:
        return 0.0
    out = 0.0
    for p, c in zip(reference, counts):
        q, p = max(c / n, EPS), max(p, EPS)
        out += (q - p) * math.log(q / p)
    return out


class Segments:
    """:func:`psi` of many distributions at once: ``reference`` holds the bins of every
    distribution laid end to end, ``starts`` the index where each begins; what depends only on
    the reference is computed once, so :meth:`psi` of live counts (laid out the same way) is
    about ten numpy calls. A segment with no counts scores 0."""

    def __init__(self, reference: np.ndarray, starts: np.ndarray) -> None:
        self.starts = np.asarray(starts, dtype=np.intp)
        ref = np.asarray(reference, dtype=np.float64)
        self.p = np.maximum(ref, EPS)
        self.seg = np.repeat(np.arange(len(self.starts)), np.diff(np.append(self.starts, len(ref))))

    def psi(self, counts: np.ndarray) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        totals = np.add.reduceat(counts, self.starts)
        q = counts / np.maximum(totals, 1.0)[self.seg]
        np.maximum(q, EPS, out=q)
        out = np.add.reduceat((q - self.p) * np.log(q / self.p), self.starts)
        out[totals <= 0] = 0.0
        return out


def softmax_max(logits: np.ndarray) -> np.ndarray:
    """The largest softmax probability of each row (last axis = classes)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return (1.0 / np.exp(z).sum(axis=-1)).ravel()  # the largest exp(z) is exp(0) = 1: the same figure
