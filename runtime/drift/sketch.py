"""Bounded-memory sketches of live tensors over a baseline's bins, and their scores.

A :class:`DriftSketch` keeps one flat vector of integer counts per *slot*, laid out once from
the baseline (:class:`_Layout`): per tensor a row of bins per feature (or one pooled row when
the tensor has no per-feature view, or a call's shape does not fit it), each row the
baseline's bins plus a below-min and an above-max bin (out of range) and one bin each for
-Inf, +Inf and NaN (so non-finite values are counted by the same pass); for a classifier
the predicted-class and confidence bins; and the rows counted. Counting a batch of calls
stacks each tensor's arrays into one batch, bins every value by how many of the ext edges
``[-inf, below min, *edges, max, largest float, inf]`` it is at or under (one
``np.searchsorted`` per tensor for a small batch; for a large one a comparison of the batch
with every edge and a sum, branch-free where a binary search per value mispredicts), offsets
each feature's bin numbers into its row of the vector,
and counts everything with one ``np.bincount``: a few numpy calls per tensor and check, none
per request, value or feature. :meth:`close_slot` ends a slot; the window is the sum of the last ``window_slots``
slots. Scoring (:meth:`DriftSketch.evaluate`, every check) maps the window's bins onto the
judged distributions (pooled per tensor: the sum of its feature rows; class mix; confidence)
and the out-of-range, NaN/Inf, value and row counts with one weighted ``np.bincount`` and
scores them in plain Python (a few dozen bins); the per-feature PSI, reported and never
alarmed, is one vectorized PSI (:class:`~runtime.drift.binning.Segments`) worked out only when
the full scores are read. Memory is fixed by the baseline (bins x features x slots), never by
the traffic.

Pure numpy: the device's drift monitor feeds it batches of calls and reads the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from ..contracts.bundle.baseline import DriftBaseline
from .binning import Segments, feature_rows, psi, softmax_max

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
    ext: np.ndarray          # [-inf, nextafter(min, -inf), *edges, max, largest float64, inf]
    ext32: np.ndarray        # the same edges rounded down to float32: x <= e  <=>  x <= ext32 for float32 x
    layout: str | None
    n_features: int
    feat_off: np.ndarray     # where each feature's row of bins starts in the count vector
    pool_base: int           # the pooled row, for calls whose shape does not fit the feature layout
    rows_pos: int            # the count of rows (samples) seen
    psi_seg: int             # index of its pooled distribution among the judged segments
    feat_segs: slice         # its feature distributions among the feature segments

    def __post_init__(self) -> None:
        self.feat_top = self.feat_off + len(self.ext)  # a row's start + the edges: see _index


#: a row of bins holds, by searchsorted index i over the ext edges: 0 -Inf, 1 below min, 2 .. nb+1 the
#: baseline's nb bins, nb+2 above max, nb+3 +Inf, nb+4 NaN
_EXTRA = 5


def _cell(row: int, width: int, i: Any) -> np.ndarray:
    """Where index ``i`` of a row of bins starting at ``row`` is counted: the row is stored from
    the last index down (:func:`_index` counts the edges a value is at or under, ``width - 1 - i``)."""
    return row + width - 1 - np.asarray(i, dtype=np.intp)


class _Map:
    """``src``/``dst`` pairs (a count at ``src`` adds to target ``dst``: one weighted bincount maps
    the window's vector onto them) and the distributions (reference shares) among the targets."""

    def __init__(self) -> None:
        self.src: list[np.ndarray] = []
        self.dst: list[np.ndarray] = []
        self.refs: list[list[float]] = []
        self.bounds: list[tuple[int, int]] = []

    def segment(self, shares) -> int:
        start = self.bounds[-1][1] if self.bounds else 0
        self.refs.append([float(p) for p in shares])
        self.bounds.append((start, start + len(shares)))
        return len(self.bounds) - 1

    def add(self, src, dst) -> None:
        self.src.append(np.asarray(src, dtype=np.intp))
        self.dst.append(np.asarray(dst, dtype=np.intp))

    def close(self, extra_targets: int = 0) -> None:
        self.n_bins = self.bounds[-1][1] if self.bounds else 0
        self.n_targets = self.n_bins + extra_targets
        self.src_a = np.concatenate(self.src) if self.src else np.zeros(0, np.intp)
        self.dst_a = np.concatenate(self.dst) if self.dst else np.zeros(0, np.intp)

    def counts(self, w: np.ndarray) -> np.ndarray:
        return np.bincount(self.dst_a, weights=w[self.src_a], minlength=self.n_targets)


class _Layout:
    """Where every count lives in the flat vector, and two maps of the window onto the scores:
    ``judged`` (every check: each tensor's pooled bins, the class and confidence bins, then per
    tensor the out-of-range, non-finite, value and row counts, and the rows given a class) and
    ``features`` (read with the full scores: the bins of each feature)."""

    def __init__(self, b: DriftBaseline) -> None:
        self.tensors: list[_Tensor] = []
        self.judged, self.features = _Map(), _Map()
        pos, n_t = 0, len(b.tensors)
        for name, t in b.tensors.items():
            edges = np.asarray(t.values.edges, dtype=np.float64)
            nb = len(edges) + 1
            width = nb + _EXTRA
            ext = np.concatenate([[-np.inf, np.nextafter(t.min, -np.inf)], edges,
                                  [t.max, np.finfo(np.float64).max, np.inf]])
            nf = len(t.feature_proportions) if t.feature_axis is not None else 0
            feat_off = pos + width * np.arange(nf, dtype=np.intp)
            pool_base = pos + width * nf
            pos = pool_base + width
            psi_seg = self.judged.segment(t.values.proportions)
            first = len(self.features.bounds)
            feat_segs = [self.features.segment(shares) for shares in t.feature_proportions]
            self.tensors.append(_Tensor(name, t.role.value, ext, _floor32(ext), t.feature_axis, nf, feat_off,
                                        pool_base, -1, psi_seg, slice(first, len(self.features.bounds))))
            # local bin -> baseline bin: out of range joins the first / the last, non-finite joins none
            local = np.concatenate([[0], np.arange(nb), [nb - 1]])  # local bins 1 .. nb+2
            for r, row in enumerate([*feat_off, pool_base]):
                cells = _cell(row, width, 1 + np.arange(nb + 2))
                self.judged.add(cells, self.judged.bounds[psi_seg][0] + local)  # pooled: every row
                if r < nf:
                    self.features.add(cells, self.features.bounds[feat_segs[r]][0] + local)
        self.classes = None
        if b.classes is not None:
            c = b.classes
            nc, cedges = len(c.proportions), np.asarray(c.confidence.edges, dtype=np.float64)
            cls_base, conf_base = pos, pos + nc
            pos = conf_base + len(cedges) + 1
            s1 = self.judged.segment(c.proportions)
            s2 = self.judged.segment(c.confidence.proportions)
            self.judged.add(np.arange(cls_base, pos), self.judged.bounds[s1][0] + np.arange(pos - cls_base))
            self.classes = (c.output, nc, cls_base, cedges, conf_base, c.softmax, s1, s2)
        nj = self.judged.bounds[-1][1] if self.judged.bounds else 0
        for k, t in enumerate(self.tensors):  # per tensor: out of range, non-finite, every value
            width = len(t.ext) + 1
            nb = width - _EXTRA
            for row in [*t.feat_off, t.pool_base]:
                self.judged.add(_cell(row, width, [1, nb + 2]), np.full(2, nj + k))
                self.judged.add(_cell(row, width, [0, nb + 3, nb + 4]), np.full(3, nj + n_t + k))
                self.judged.add(row + np.arange(width), np.full(width, nj + 2 * n_t + k))
            t.rows_pos = pos + k
        self.rows_base = pos
        self.size = pos + n_t + 1  # the rows of each tensor, then the rows given a class
        self.judged.add(np.arange(pos, self.size), nj + 3 * n_t + np.arange(n_t + 1))
        self.judged.close(4 * n_t + 1)
        self.features.close()
        self.feature_psi = Segments(np.asarray([p for r in self.features.refs for p in r]),
                                    np.asarray([a for a, _ in self.features.bounds], dtype=np.intp))


class DriftSketch:
    """Live counts of every baseline tensor in a sliding window of ``window_slots`` slots."""

    def __init__(self, baseline: DriftBaseline, *, window_slots: int = 5) -> None:
        if window_slots < 1:
            raise ValueError("window_slots must be >= 1")
        self.baseline = baseline
        self._lay = _Layout(baseline)
        self.window_slots = window_slots
        # the slots, one row each: row self._open is being filled, the others are the window
        self._ring = np.zeros((window_slots + 1, self._lay.size), dtype=np.int64)
        self._open = 0
        self._open_empty = True  # nothing counted in the open slot yet
        self.closed = 0  # slots closed so far

    @property
    def current(self) -> np.ndarray:
        """The counts of the open slot (a view)."""
        return self._ring[self._open]

    def add(self, calls: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]) -> int:
        """Count a batch of calls ``(feeds, outputs)`` into the current slot; returns how many."""
        calls = calls if isinstance(calls, list) else list(calls)
        if not calls:
            return 0
        lay, cur = self._lay, self._ring[self._open]
        cls_name = lay.classes[0] if lay.classes is not None else None
        parts: list[np.ndarray] = []
        rows = [0] * (len(lay.tensors) + 1)  # per tensor, then given a class: added once, at the end
        for k, t in enumerate(lay.tensors):
            for a in _stack(_column(calls, 0 if t.kind == "input" else 1, t.name)):
                for chunk in _chunks(a, len(t.ext)):
                    rows[k] += chunk.shape[0]
                    parts.append(_index(t, chunk))
                    if t.name == cls_name and t.kind == "output":
                        rows[-1] += self._classes(chunk, parts)
        self._open_empty = False
        if parts:  # every part's count positions, flattened by the one concatenate
            cur += np.bincount(np.concatenate(parts, axis=None), minlength=lay.size)
        cur[lay.rows_base:] += rows
        return len(calls)

    def _classes(self, y: np.ndarray, parts: list[np.ndarray]) -> int:
        """Add to ``parts`` the count positions of the predicted class and the confidence of each
        row of ``y`` (a row with NaN, +Inf or only -Inf has no class; the tensor's own bins count
        its values); returns the rows given a class. The confidence is worked out in float64
        (:func:`softmax_max`), as the baseline's was."""
        _, nc, cls_base, cedges, conf_base, softmax, _, _ = self._lay.classes
        if y.ndim != 2 or y.shape[1] != nc:
            return 0  # a mis-shaped output has no class
        conf = softmax_max(y) if softmax else y.max(axis=1)
        if not math.isfinite(float(conf.sum())):
            keep = np.isfinite(conf)
            y, conf = y[keep], conf[keep]
        parts += [y.argmax(axis=1) + cls_base, np.searchsorted(cedges, conf, side="left") + conf_base]
        return y.shape[0]

    def close_slot(self) -> None:
        """End the current slot: it enters the window, the oldest slot leaves it when full."""
        self._open = (self._open + 1) % self._ring.shape[0]
        self._ring[self._open] = 0
        self._open_empty = True
        self.closed += 1

    def _window(self) -> np.ndarray:
        w = self._ring.sum(axis=0)
        return w if self._open_empty else w - self._ring[self._open]

    @property
    def window_rows(self) -> int:
        """Samples in the window (of the tensor with the fewest, so every score has them)."""
        n, base = len(self._lay.tensors), self._lay.rows_base
        return int(self._window()[base:base + n].min()) if n else 0

    def scores(self) -> list[Score]:
        return self.evaluate().scores()

    def evaluate(self) -> "Evaluation":
        """The window's judged figures now (about five numpy calls and a PSI per distribution
        in plain Python); the per-feature PSI of its full :meth:`Evaluation.scores` when read."""
        lay, w = self._lay, self._window()
        got = lay.judged.counts(w).tolist()
        psis = [psi(ref, got[a:b]) for ref, (a, b) in zip(lay.judged.refs, lay.judged.bounds)]
        n_t, nj = len(lay.tensors), lay.judged.n_bins
        oor, bad, vals, rows = (got[nj + i * n_t:nj + (i + 1) * n_t] for i in range(4))
        figs = [(t.name, t.kind, int(rows[k]), psis[t.psi_seg], oor[k] / max(vals[k], 1.0),
                 bad[k] / max(vals[k], 1.0)) for k, t in enumerate(lay.tensors)]
        if lay.classes is not None:
            name, *_, s1, s2 = lay.classes
            n = int(got[nj + 4 * n_t])
            figs += [(name, "class", n, psis[s1], 0.0, 0.0), (name, "confidence", n, psis[s2], 0.0, 0.0)]
        return Evaluation(int(min(rows)) if n_t else 0, figs, w, lay)


class Evaluation:
    """One scoring of the window: ``samples`` (:attr:`DriftSketch.window_rows`), ``figures``
    ``(name, kind, samples, psi, out_of_range_share, nonfinite_share)`` per distribution (what
    the alarm rule judges), and :meth:`scores` (adds each tensor's worst per-feature PSI)."""

    __slots__ = ("samples", "figures", "_w", "_lay")

    def __init__(self, samples: int, figures: list[tuple], w: np.ndarray, lay: _Layout) -> None:
        self.samples, self.figures, self._w, self._lay = samples, figures, w, lay

    def scores(self) -> list[Score]:
        lay = self._lay
        feats = lay.feature_psi.psi(lay.features.counts(self._w)).tolist() if lay.features.bounds else []
        out = []
        for fig in self.figures:
            t = next((t for t in lay.tensors if t.name == fig[0] and t.kind == fig[1]), None)
            f = feats[t.feat_segs] if t is not None else []
            out.append(Score(*fig, max(f) if f else None))
        return out


def _floor32(e: np.ndarray) -> np.ndarray:
    """``e`` as float32, each rounded toward -inf (so comparisons of float32 values are exact)."""
    with np.errstate(over="ignore"):  # the largest float64 becomes +inf here, rounded down below
        f = e.astype(np.float32)
    up = f.astype(np.float64) > e
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    return f


#: bool cells compared at once by :func:`_index` (bounds its temporaries: ~10 bytes a cell)
_CHUNK_CELLS = 1 << 22


def _chunks(a: np.ndarray, edges: int) -> Iterable[np.ndarray]:
    """``a`` (samples along axis 0) in pieces of at most :data:`_CHUNK_CELLS` // ``edges`` values."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        a = np.asarray(a).reshape(-1)
    per_row = max(1, a.size // max(1, a.shape[0])) * edges
    if a.shape[0] * per_row <= _CHUNK_CELLS or a.shape[0] <= 1:
        return (a,)
    step = max(1, _CHUNK_CELLS // per_row)
    return (a[s:s + step] for s in range(0, a.shape[0], step))


#: up to this many values a batch is binned by binary search (fewer numpy calls, which is what
#: a small batch costs), above it by comparison with every edge (branch-free, what a large one costs)
_SEARCH_VALUES = 4096


def _index(t: _Tensor, a: np.ndarray) -> np.ndarray:
    """The count position of every value of ``a`` (shaped like its rows): its feature's row (or
    the pooled row) plus how many ext edges it is at or under (NaN is under none: the last bin
    of the searchsorted order), in ``a``'s own precision when float32."""
    ext = t.ext32 if a.dtype == np.float32 else t.ext
    rows = feature_rows(a, t.layout) if t.layout is not None and a.ndim >= 2 else None
    if rows is not None and rows.shape[1] == t.n_features:
        off, top = t.feat_off, t.feat_top
    else:
        rows, off, top = a.reshape(-1), t.pool_base, t.pool_base + len(ext)
    if rows.size <= _SEARCH_VALUES:  # at or under = all the edges less those strictly under the value
        return np.subtract(top, np.searchsorted(ext, rows, side="left"))
    col = ext[:, None, None] if rows.ndim == 2 else ext[:, None]
    # summed in uint8 (the fastest) while a value can be at or under no more than 255 edges
    return (rows <= col).view(np.uint8).sum(axis=0, dtype=np.uint8 if len(ext) <= 255 else np.intp) + off


def _column(calls: list, side: int, name: str) -> list[np.ndarray]:
    """``name``'s array of every call that has it, among the feeds (``side`` 0) or outputs (1)."""
    try:
        return [c[side][name] for c in calls]
    except KeyError:
        return [c[side][name] for c in calls if name in c[side]]


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
