"""Parity and accuracy figures for one artifact against the reference (pure numpy, no I/O).

Default tolerances are declared per precision (like Optimum's ``ATOL_FOR_VALIDATION``); user
gates (``--atol``, ``--min-cosine``, ``--max-accuracy-drop``) replace them for every artifact.
``atol`` of ``None`` means "not gated": fp16 and int8 error in absolute units grows with the
output scale (logits of 20 lose ~0.01 in fp16), so they are judged by cosine similarity and
task accuracy instead; fp32 must match to ``1e-3`` absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from runtime.bundle import Precision  # the one Precision enum (re-exported for toolchain.compile)


@dataclass(frozen=True)
class Tolerances:
    atol: float | None
    min_cosine: float | None
    max_accuracy_drop_pts: float | None = None

    def to_json(self) -> dict:
        return {"atol": self.atol, "min_cosine": self.min_cosine, "max_accuracy_drop_pts": self.max_accuracy_drop_pts}


#: declared default tolerances per precision (breaching one fails the artifact's verification)
DEFAULT_TOLERANCES: dict[Precision, Tolerances] = {
    Precision.FP32: Tolerances(atol=1e-3, min_cosine=0.9999),
    Precision.FP16: Tolerances(atol=None, min_cosine=0.995),
    Precision.INT8_STATIC: Tolerances(atol=None, min_cosine=0.85),
    Precision.INT8_DYNAMIC: Tolerances(atol=None, min_cosine=0.85),
    Precision.INT8: Tolerances(atol=None, min_cosine=0.85),
}


@dataclass(frozen=True)
class UserGates:
    """Gates set on the command line; a set field overrides the precision default."""

    atol: float | None = None
    min_cosine: float | None = None
    max_accuracy_drop_pts: float | None = None


def tolerances_for(precision: Precision, gates: UserGates) -> Tolerances:
    t = DEFAULT_TOLERANCES[precision]
    if gates.atol is not None:
        t = replace(t, atol=gates.atol)
    if gates.min_cosine is not None:
        t = replace(t, min_cosine=gates.min_cosine)
    if gates.max_accuracy_drop_pts is not None:
        t = replace(t, max_accuracy_drop_pts=gates.max_accuracy_drop_pts)
    return t


def _per_sample_matrix(outs: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    n = len(outs[names[0]])
    return np.concatenate([np.asarray(outs[k], dtype=np.float64).reshape(n, -1) for k in names], axis=1)


def _top1(outs: Mapping[str, np.ndarray], first: str) -> np.ndarray | None:
    a = np.asarray(outs[first])
    if a.ndim != 2 or a.shape[1] < 2:
        return None  # not a classifier-shaped output
    return a.argmax(axis=1)


def accuracy(outs: Mapping[str, np.ndarray], first: str, labels: np.ndarray | None) -> float | None:
    pred = _top1(outs, first)
    if pred is None or labels is None:
        return None
    return float((pred == labels).mean())


def compare(*, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], output_names: list[str],
            labels: np.ndarray | None, reference_accuracy: float | None, tolerances: Tolerances) -> dict:
    """Figures and gate outcome (JSON-ready, the manifest's ``verification``)."""
    ref = _per_sample_matrix(reference, output_names)
    cand = _per_sample_matrix(candidate, output_names)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape} vs artifact {cand.shape}")
    diff = np.abs(ref - cand)
    num = (ref * cand).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.all(diff == 0, axis=1), 1.0, 0.0))
    first = output_names[0]
    p_ref, p_cand = _top1(reference, first), _top1(candidate, first)
    acc = accuracy(candidate, first, labels)
    res = {
        "samples": int(ref.shape[0]),
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "top1_agreement": None if p_ref is None else float((p_ref == p_cand).mean()),
        "accuracy": acc,
        "reference_accuracy": reference_accuracy,
        "accuracy_drop_pts": None if acc is None or reference_accuracy is None else round((reference_accuracy - acc) * 100, 4),
        "tolerances": tolerances.to_json(),
    }
    res["failures"] = gate_failures(res, tolerances)
    res["passed"] = not res["failures"]
    return res


def gate_failures(fig: dict, t: Tolerances) -> list[str]:
    """Human-readable breaches, each naming the figure, its value and the limit."""
    out = []
    if t.atol is not None and fig["max_abs_error"] > t.atol:
        out.append(f"max_abs_error {fig['max_abs_error']:.3g} > atol {t.atol:g}")
    if t.min_cosine is not None and fig["cosine_min"] < t.min_cosine:
        out.append(f"cosine_min {fig['cosine_min']:.6f} < min_cosine {t.min_cosine:g}")
    if t.max_accuracy_drop_pts is not None:
        drop = fig["accuracy_drop_pts"]
        if drop is None:
            out.append("accuracy drop gate set but no labels/accuracy available")
        elif drop > t.max_accuracy_drop_pts:
            out.append(f"accuracy_drop_pts {drop:.2f} > max_accuracy_drop {t.max_accuracy_drop_pts:g}")
    return out
