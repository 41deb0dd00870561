"""Bounded-memory sketches of live tensors over a baseline's bins, and their scores.

A :class:`DriftSketch` keeps one flat vector of integer counts per *slot*, laid out once from
the baseline (:class:`_Layout`): per tensor the pooled bins (plus a below-min and an
above-max bin, so out-of-range comes from the same pass), the per-feature bins on the same
edges, and for a classifier the predicted-class and confidence bins. Counting a batch of
calls stacks each tensor's arrays into one batch and counts it with one comparison per bin edge
and a matrix-vector product (:func:`_above`: the values above each edge, per feature), so
the cost per check is a few numpy calls per tensor, not per request or per value; scoring
every distribution is one vectorized PSI over the window's vector. :meth:`close_slot` ends a slot;
the window is the sum of the last ``window_slots`` slots. Memory is fixed by the baseline
(bins x features x slots), never by the traffic.

Pure numpy: the device's drift monitor feeds it batches of calls and reads the scores.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from ..contracts.bundle.baseline import DriftBaseline
from .binning import feature_rows, psi_segments, softmax_max


@dataclass(frozen=True)
class Score:
    """One check's figures for one distribution. ``kind``: input, output, class or confidence."""

    name: str
    kind: str
    samples: int
    psi: float
    out_of_range_share: float = 0.0
    nonfinite_share: float = 0.0
    feature_psi_max: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "samples": self.samples, "psi": round(self.psi, 6),
                "out_of_range_share": round(self.out_of_range_share, 6),
                "nonfinite_share": round(self.nonfinite_share, 6),
                "feature_psi_max": None if self.feature_psi_max is None else round(self.feature_psi_max, 6)}


@dataclass
class _Tensor:
    name: str
    kind: str
    ext: np.ndarray          # [nextafter(min, -inf), *edges, max]: bin 0 is below min, the last above max
    ext32: np.ndarray        # the same edges rounded down to float32: x <= e  <=>  x <= ext32 for float32 x
    base: int                # offset of its ext bins in the count vector (len(ext) + 1 of them)
    layout: str | None
    n_features: int
    feat_base: int           # offset of its feature bins (n_features x bins)
    bins: int                # the baseline's bins (len(edges) + 1)
    psi_seg: int             # index of its pooled distribution among the PSI segments
    feat_segs: slice         # its feature distributions among the PSI segments

    def __post_init__(self) -> None:
        self.ext_col, self.ext32_col = self.ext[:, None, None], self.ext32[:, None, None]  # for _above


class _Layout:
    """Where every count lives in the flat vector, and how the vector maps onto PSI segments."""

    def __init__(self, b: DriftBaseline) -> None:
        pos, refs, seg_starts = 0, [], []
        self.tensors: list[_Tensor] = []
        self._targets: dict[int, int] = {}
        for name, t in b.tensors.items():
            edges = np.asarray(t.values.edges, dtype=np.float64)
            ext = np.concatenate([[np.nextafter(t.min, -np.inf)], edges, [t.max]])
            nb = len(edges) + 1
            base, pos = pos, pos + len(ext) + 1
            # pooled PSI bins: ext bin 0 (below min) joins bin 0, the above-max bin joins the last
            seg = self._segment(refs, seg_starts, t.values.proportions,
                                [[base, base + 1]] + [[base + 1 + i] for i in range(1, nb - 1)]
                                + [[base + nb, base + nb + 1]] if nb > 1 else [[base, base + 1, base + 2]])
            nf = len(t.feature_proportions)
            feat_base, pos = pos, pos + nf * nb
            first = len(seg_starts)
            for j, shares in enumerate(t.feature_proportions):
                self._segment(refs, seg_starts, shares, [[feat_base + j * nb + i] for i in range(nb)])
            self.tensors.append(_Tensor(name, t.role.value, ext, _floor32(ext), base, t.feature_axis, nf, feat_base, nb, seg,
                                        slice(first, len(seg_starts))))
        self.classes = None
        if b.classes is not None:
            c = b.classes
            nc, cedges = len(c.proportions), np.asarray(c.confidence.edges, dtype=np.float64)
            cls_base, conf_base = pos, pos + nc
            pos = conf_base + len(cedges) + 1
            s1 = self._segment(refs, seg_starts, c.proportions, [[cls_base + i] for i in range(nc)])
            s2 = self._segment(refs, seg_starts, c.confidence.proportions,
                               [[conf_base + i] for i in range(len(cedges) + 1)])
            self.classes = (c.output, nc, cls_base, cedges, conf_base, c.softmax, s1, s2)
        self.size = pos
        self.reference = np.concatenate(refs)
        self.starts = np.asarray(seg_starts)
        self.target = np.full(pos, len(self.reference), dtype=np.int64)  # unmapped -> a dropped extra bin
        for count_pos, psi_bin in self._targets.items():
            self.target[count_pos] = psi_bin

    def _segment(self, refs: list, starts: list, shares, groups: list[list[int]]) -> int:
        start = sum(len(r) for r in refs)
        starts.append(start)
        refs.append(np.asarray(shares, dtype=np.float64))
        for i, group in enumerate(groups):
            for p in group:
                self._targets[p] = start + i
        return len(starts) - 1


class DriftSketch:
    """Live counts of every baseline tensor in a sliding window of ``window_slots`` slots."""

    def __init__(self, baseline: DriftBaseline, *, window_slots: int = 5) -> None:
        if window_slots < 1:
            raise ValueError("window_slots must be >= 1")
        self.baseline = baseline
        self._lay = _Layout(baseline)
        n = len(self._lay.tensors)
        self._slots: deque = deque(maxlen=window_slots)
        self._window = self._empty()
        self._current = self._empty()
        self._names = [t.name for t in self._lay.tensors]
        self._n = n

    def _empty(self) -> dict[str, np.ndarray]:
        n = len(self._lay.tensors)
        # counts; per tensor: rows, values, non-finite values
        return {"c": np.zeros(self._lay.size, dtype=np.int64), "rows": np.zeros(n, dtype=np.int64),
                "vals": np.zeros(n, dtype=np.int64), "bad": np.zeros(n, dtype=np.int64), "cls": np.zeros(1, np.int64)}

    def add(self, calls: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]) -> int:
        """Count a batch of calls ``(feeds, outputs)`` into the current slot; returns how many."""
        calls = calls if isinstance(calls, list) else list(calls)
        feeds, outs = [c[0] for c in calls], [c[1] for c in calls]
        cur = self._current
        cls_name = self._lay.classes[0] if self._lay.classes is not None else None
        for k, t in enumerate(self._lay.tensors):
            for a in _stack(_column(feeds if t.kind == "input" else outs, t.name)):
                self._count(k, t, a, cur)
                if t.name == cls_name and t.kind == "output":
                    self._classes(a, cur)
        return len(calls)

    def _count(self, k: int, t: _Tensor, a: np.ndarray, cur: dict) -> None:
        """Add ``a``'s values to its pooled and per-feature bins: per edge one comparison over the
        whole batch and one matrix-vector product for the counts above it (no per-value index)."""
        a = np.asarray(a)
        if a.ndim == 0:
            a = a.reshape(1)
        cur["rows"][k] += a.shape[0]
        cur["vals"][k] += a.size
        rows = a.reshape(-1, 1)
        if t.layout is not None and a.ndim >= 2:
            r = feature_rows(a, t.layout)
            rows = r if r.shape[1] == t.n_features else rows
        ext = t.ext32_col if a.dtype == np.float32 else t.ext_col
        c = _bins(rows, ext, 0)
        pooled = c.sum(axis=1)
        if (pooled[0] or pooled[-1]) and a.dtype.kind == "f":  # NaN/-Inf land in bin 0 and +Inf in the last
            finite = np.isfinite(rows)                        # (out of range does too): look closer
            if not finite.all():
                bad_f = rows.shape[0] - np.count_nonzero(finite, axis=0)
                cur["bad"][k] += int(bad_f.sum())
                c = _bins(np.where(finite, rows, np.nan), ext, bad_f)  # NaN is above no edge: bin 0, taken out
                pooled = c.sum(axis=1)
        cur["c"][t.base:t.base + len(pooled)] += pooled
        if rows.shape[1] == t.n_features and t.layout is not None:
            f = cur["c"][t.feat_base:t.feat_base + t.n_features * t.bins].reshape(t.n_features, t.bins)
            f += c[1:t.bins + 1].T  # a view: the baseline bins, where out of range joins the first/last
            f[:, 0] += c[0]
            f[:, -1] += c[t.bins + 1]

    def _classes(self, a: np.ndarray, cur: dict) -> None:
        _, nc, cls_base, cedges, conf_base, softmax, _, _ = self._lay.classes
        y = np.asarray(a, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != nc or not np.all(np.isfinite(y)):
            return  # the tensor's own sketch counts NaN/Inf; a mis-shaped output has no class
        conf = softmax_max(y) if softmax else y.max(axis=1)
        n = nc + len(cedges) + 1  # the class bins, then the confidence bins right after them
        idx = np.concatenate([y.argmax(axis=1), nc + np.searchsorted(cedges, conf, side="left")])
        cur["c"][cls_base:cls_base + n] += np.bincount(idx, minlength=n)
        cur["cls"][0] += y.shape[0]

    def close_slot(self) -> None:
        """End the current slot: it enters the window, the oldest slot leaves it when full."""
        if len(self._slots) == self._slots.maxlen:
            for key, v in self._slots[0].items():
                self._window[key] -= v
        self._slots.append(self._current)
        for key, v in self._current.items():
            self._window[key] += v
        self._current = self._empty()

    @property
    def window_rows(self) -> int:
        """Samples in the window (of the tensor with the fewest, so every score has them)."""
        return int(self._window["rows"].min()) if self._n else 0

    def scores(self) -> list[Score]:
        lay, w = self._lay, self._window
        psi_counts = np.bincount(lay.target, weights=w["c"], minlength=len(lay.reference) + 1)[:-1]
        psis = psi_segments(lay.reference, psi_counts, lay.starts).tolist()  # Python floats: no numpy scalars
        c, rows, vals, bad = w["c"], w["rows"].tolist(), w["vals"].tolist(), w["bad"].tolist()
        out = []
        for k, t in enumerate(lay.tensors):
            n = max(vals[k], 1)
            oor = int(c[t.base] + c[t.base + len(t.ext)])
            feats = psis[t.feat_segs]
            out.append(Score(t.name, t.kind, rows[k], psis[t.psi_seg], oor / n, bad[k] / n,
                             max(feats) if feats else None))
        if lay.classes is not None:
            name, *_, s1, s2 = lay.classes
            n = int(w["cls"][0])
            out += [Score(name, "class", n, float(psis[s1])), Score(name, "confidence", n, float(psis[s2]))]
        return out


def _floor32(e: np.ndarray) -> np.ndarray:
    """``e`` as float32, each rounded toward -inf (so comparisons of float32 values are exact)."""
    f = e.astype(np.float32)
    up = f.astype(np.float64) > e
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    return f


#: bool cells compared at once by :func:`_above` (bounds its temporary memory: ~5 bytes a cell)
_CHUNK_CELLS = 1 << 20


def _bins(rows: np.ndarray, ext: np.ndarray, bad_f: Any) -> np.ndarray:
    """Counts per ext bin and feature [len(ext) + 1, features] of ``rows``, less ``bad_f`` NaN per
    feature (NaN is above no edge, so :func:`_above` leaves it in bin 0)."""
    above = _above(rows, ext)  # [len(ext), features]: values above each edge
    m = ext.shape[0]
    c = np.empty((m + 1, rows.shape[1]), dtype=np.int64)
    c[0] = rows.shape[0] - above[0] - bad_f
    c[1:m] = above[:-1] - above[1:]
    c[m] = above[-1]
    return c


_ONES = np.ones(0, np.float32)


def _ones(n: int) -> np.ndarray:
    """A read-only view of ``n`` float32 ones (one array, grown to the largest chunk seen)."""
    global _ONES
    ones = _ONES  # one read: two monitors' threads may grow it at once, each keeps the array it read or made
    if ones.shape[0] < n:
        ones = np.ones(n, np.float32)
        ones.flags.writeable = False
        _ONES = ones
    return ones[:n]


def _above(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``out[i, j]``: how many values of column ``j`` of ``rows`` are ``> edges[i, 0, 0]`` (``edges``
    shaped [n, 1, 1] to broadcast against [rows, features]; exact counts;
    float32 sums of 0/1 are exact below 2**24 rows, a chunk holds far fewer)."""
    n, f = rows.shape
    step = max(1, _CHUNK_CELLS // max(1, edges.shape[0] * f))
    ones = _ones(min(n, step))
    if n <= step:  # the usual case: one chunk; [edges, rows, features] compared, summed over rows
        return (ones @ (rows > edges)).astype(np.int64)
    out = np.zeros((edges.shape[0], f), dtype=np.int64)
    for s in range(0, n, step):
        part = rows[s:s + step]
        out += (ones[:part.shape[0]] @ (part > edges)).astype(np.int64)
    return out


def _column(calls: list[Mapping[str, np.ndarray]], name: str) -> list[np.ndarray]:
    """``name``'s array of every call that has it."""
    try:
        return [d[name] for d in calls]
    except KeyError:
        return [d[name] for d in calls if name in d]


def _stack(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Arrays with the same trailing shape concatenated along axis 0 (one numpy call each)."""
    if not arrays:
        return []
    try:
        return [np.concatenate(arrays)]  # the usual case: every call has the same shape
    except ValueError:
        pass
    groups: dict[tuple, list[np.ndarray]] = {}
    for a in arrays:
        a = np.asarray(a)
        groups.setdefault(a.shape[1:] if a.ndim else (), []).append(a if a.ndim else a.reshape(1))
    return [g[0] if len(g) == 1 else np.concatenate(g) for g in groups.values()]
