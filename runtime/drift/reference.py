"""Build a bundle's drift baseline from validation inputs and the model's outputs on them.

Called by ``edgeship package`` with every validation sample it ran the artifact on. Pure:
arrays in, a :class:`DriftBaseline` out (checked by its strict ``from_json`` on the way out).

Raises :class:`DriftBaselineError` (exit code 2) for a baseline that would be broken: a NaN
or Inf in the data or outputs (the device would compare live traffic with garbage), a class
output that is not [samples, classes], or fewer samples than :data:`MIN_SAMPLES` when a
baseline is demanded (``edgeship package`` then writes none and says so instead).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..contracts.bundle.baseline import Bins, ClassBaseline, DriftBaseline, DriftThresholds, Role, TensorBaseline
from ..contracts.errors import BundleError
from .binning import bin_counts, feature_layout, feature_rows, quantile_edges, softmax_max

#: fewer validation samples than this give PSI bins too noisy to judge live traffic by
MIN_SAMPLES = 100


class DriftBaselineError(BundleError):
    """The validation data cannot make a sound drift baseline; the message names the tensor."""


def _bins(edges: np.ndarray, counts: np.ndarray) -> Bins:
    total = counts.sum()
    props = counts / total if total else np.full(len(counts), 1.0 / len(counts))
    return Bins(edges=tuple(float(e) for e in edges), proportions=tuple(float(p) for p in props))


def tensor_baseline(name: str, a: np.ndarray, role: Role) -> TensorBaseline:
    """Pooled and per-feature quantile bins of one tensor (samples along axis 0)."""
    x = np.asarray(a, dtype=np.float64)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DriftBaselineError(f"{role.value} {name!r}: {bad} NaN/Inf value(s) in the validation "
                                 f"{'data' if role is Role.INPUT else 'outputs'}; the drift baseline would be broken")
    edges = quantile_edges(x)
    layout = feature_layout(tuple(x.shape[1:]))
    feats: tuple[tuple[float, ...], ...] = ()
    if layout is not None:
        rows = feature_rows(x, layout)
        feats = tuple(_bins(edges, bin_counts(edges, rows[:, j])).proportions for j in range(rows.shape[1]))
    return TensorBaseline(role=role, min=float(x.min()), max=float(x.max()), values=_bins(edges, bin_counts(edges, x)),
                          feature_axis=layout, feature_proportions=feats)


def class_baseline(name: str, out: np.ndarray) -> ClassBaseline:
    """Predicted-class shares and confidence bins of a classifier output [samples, classes]."""
    y = np.asarray(out, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise DriftBaselineError(f"output {name!r} of shape {list(y.shape)} is not [samples, classes]; "
                                 "a class baseline needs one row of class scores per sample")
    probs = bool(np.all(y >= 0) and np.allclose(y.sum(axis=1), 1.0, atol=1e-3))
    classes = np.bincount(y.argmax(axis=1), minlength=y.shape[1])
    conf = y.max(axis=1) if probs else softmax_max(y)
    edges = quantile_edges(conf)
    return ClassBaseline(output=name, proportions=tuple(float(c) for c in classes / classes.sum()),
                         confidence=_bins(edges, bin_counts(edges, conf)), softmax=not probs)


def build_baseline(*, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                   class_output: str | None = None, thresholds: DriftThresholds | None = None) -> DriftBaseline:
    """The drift baseline of numeric ``inputs`` and ``outputs`` (samples along axis 0).

    Raises:
        DriftBaselineError: too few samples, NaN/Inf, or a class output of the wrong shape.
    """
    n = min((int(a.shape[0]) for a in [*inputs.values(), *outputs.values()]), default=0)
    if n < MIN_SAMPLES:
        raise DriftBaselineError(f"{n} validation samples; a drift baseline needs at least {MIN_SAMPLES}")
    tensors = {name: tensor_baseline(name, a, Role.INPUT) for name, a in inputs.items() if _numeric(a)}
    tensors |= {name: tensor_baseline(name, a, Role.OUTPUT) for name, a in outputs.items() if _numeric(a)}
    classes = class_baseline(class_output, outputs[class_output]) if class_output else None
    base = DriftBaseline(samples=n, thresholds=thresholds or DriftThresholds(), tensors=tensors, classes=classes)
    return DriftBaseline.from_json(base.to_json(), where="drift")  # the device's strict reader, at package time


def _numeric(a: np.ndarray) -> bool:
    return np.asarray(a).dtype.kind in "biuf" and np.size(a) > 0
