"""Verification figures and the gate of one artifact against the reference (pure numpy, no I/O).

The gate is the task's fidelity metric (:mod:`toolchain.compile.fidelity`): each output is
judged by the metric its task calls for, against a budget declared per metric and precision
(like Optimum's ``ATOL_FOR_VALIDATION``). User gates (``--atol``, ``--min-cosine``,
``--max-accuracy-drop``) are applied on top, as asked, to every output.

Figures recorded for every artifact (the manifest's ``verification``): ``max_abs_error``,
``mean_abs_error``, ``cosine_min``/``cosine_mean`` (raw, per sample over all outputs),
``top1_agreement`` and ``accuracy`` (of the primary output,
:func:`toolchain.compile.fidelity.primary_output`, when classifier-shaped), the ``task`` and
the ``fidelity`` block that bench and reports read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from runtime.contracts.bundle import Precision  # the one Precision enum (re-exported for toolchain.compile)
from toolchain.compile import fidelity as fid

__all__ = ["Precision", "UserGates", "compare", "accuracy", "gate_failures"]


@dataclass(frozen=True)
class UserGates:
    """Gates set on the command line (None: not set)."""

    atol: float | None = None
    min_cosine: float | None = None
    max_accuracy_drop_pts: float | None = None
    fidelity_budget: float | None = None  # replaces the default budget of the task's metric

    def to_json(self) -> dict:
        return {"atol": self.atol, "min_cosine": self.min_cosine, "max_accuracy_drop_pts": self.max_accuracy_drop_pts,
                "fidelity_budget": self.fidelity_budget}

    def budgets(self, task: fid.Task | None) -> fid.Budgets:
        out: dict = {}
        if self.max_accuracy_drop_pts is not None:
            out[fid.Metric.ACCURACY_DROP_PTS] = self.max_accuracy_drop_pts
        if self.fidelity_budget is not None and task is not None:
            out[fid.TASK_METRIC[task]] = self.fidelity_budget
        return fid.Budgets(out)

    def for_probe(self) -> "UserGates":
        """The gates at a probe size: no labels there, so no accuracy gate."""
        return UserGates(atol=self.atol, min_cosine=self.min_cosine, fidelity_budget=self.fidelity_budget)


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
            labels: np.ndarray | None, reference_accuracy: float | None, task: fid.Task | None,
            precision: Any, gates: UserGates, probe_slack: bool = False) -> dict:
    """Figures and gate outcome (JSON-ready, the manifest's ``verification``).

    ``probe_slack``: the few samples of a probe size may disagree on one top-1 decision.

    Raises:
        ValueError: the artifact's outputs differ in shape from the reference's.
    """
    ref = _per_sample_matrix(reference, output_names)
    cand = _per_sample_matrix(candidate, output_names)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape} vs artifact {cand.shape}")
    diff = np.abs(ref - cand)
    num = (ref * cand).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.all(diff == 0, axis=1), 1.0, 0.0))
    ordered_ref = {n: np.asarray(reference[n]) for n in output_names}
    ordered_cand = {n: np.asarray(candidate[n]) for n in output_names}
    sc = fid.score(task, ordered_ref, ordered_cand, labels=labels)
    first = sc.primary  # the class output of a multi-head model, not a regression head before it
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
        "tolerances": gates.to_json(),
    }
    passed, failures, budget = fid.judge(sc, precision=precision, budgets=gates.budgets(sc.task),
                                         samples_slack=probe_slack)
    res["task"] = sc.task.value
    res["fidelity"] = fid.fidelity_json(sc, passed=passed, budget=budget)
    res["failures"] = failures + gate_failures(res, gates, accuracy_gated=sc.metric is fid.Metric.ACCURACY_DROP_PTS)
    res["passed"] = not res["failures"]
    res["fidelity"]["passed"] = res["passed"]
    return res


def gate_failures(fig: dict, gates: UserGates, *, accuracy_gated: bool = False) -> list[str]:
    """Breaches of the user's gates, each naming the figure, its value and the limit."""
    out = []
    if gates.atol is not None and fig["max_abs_error"] > gates.atol:
        out.append(f"max_abs_error {fig['max_abs_error']:.3g} > atol {gates.atol:g}")
    if gates.min_cosine is not None and fig["cosine_min"] < gates.min_cosine:
        out.append(f"cosine_min {fig['cosine_min']:.6f} < min_cosine {gates.min_cosine:g}")
    if gates.max_accuracy_drop_pts is not None and not accuracy_gated:
        drop = fig["accuracy_drop_pts"]
        if drop is None:
            out.append("accuracy drop gate set but no labels/accuracy available")
        elif drop > gates.max_accuracy_drop_pts:
            out.append(f"accuracy_drop_pts {drop:.2f} > max_accuracy_drop {gates.max_accuracy_drop_pts:g}")
    return out
