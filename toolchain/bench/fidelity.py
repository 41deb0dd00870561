"""Each artifact's fidelity, by the metric its model's task calls for (pure).

A build's manifest says, per artifact, how close it is to the reference. From the compile
side (``verification.fidelity``, docs/design.md):

    {"metric": "top1_agreement|accuracy_drop_pts|cosine_min|rel_max_abs|psnr_db",
     "value": float, "higher_is_better": bool, "budget": float|null, "passed": bool,
     "per_output": {...}}

with the task in ``verification.task`` or ``model.metadata.task``. Older manifests carry
only the raw figures (``accuracy_drop_pts``, ``top1_agreement``, ``cosine_min``, ...); then
the task is inferred (:func:`infer_task`) and the metric follows from it, so top-1
agreement is only ever shown for a classifier, and never as an accuracy drop.

:meth:`Fidelity.loss` orders artifacts (lower is better) for the Pareto view;
:meth:`Fidelity.drop_pts` is the figure ``--max-accuracy-drop`` bounds (classifiers only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

# the metrics are compile's (one enum; compile.fidelity is pure numpy)
from toolchain.compile.fidelity import Metric

HIGHER_IS_BETTER = {m: m.higher_is_better for m in Metric}

#: how each metric is named in tables and on plot axes
LABELS = {Metric.TOP1_AGREEMENT: "top-1 agreement", Metric.ACCURACY_DROP_PTS: "accuracy drop",
          Metric.COSINE_MIN: "min cosine", Metric.REL_MAX_ABS: "max abs error / range",
          Metric.PSNR_DB: "PSNR"}

TASKS = ("classify", "embed", "detect", "segment", "regress")

#: output names that say "this is an embedding", whatever its shape
_EMBED_NAME = re.compile(r"embed|pool|hidden|feature|vector|sentence|encod|last_hidden", re.I)


@dataclass(frozen=True)
class Fidelity:
    metric: Metric
    value: float
    higher_is_better: bool
    budget: float | None = None
    passed: bool | None = None  # the build's gate on this metric (None: not recorded)
    task: str | None = None
    source: str = "manifest"  # manifest | legacy (from the raw figures, task inferred or recorded)

    @property
    def loss(self) -> float:
        """Lower is better, comparable between artifacts of one model (same metric)."""
        return -self.value if self.higher_is_better else self.value

    @property
    def drop_pts(self) -> float | None:
        """Accuracy points lost, for classifiers: the label accuracy drop, or top-1
        disagreement with the reference. None for every other task."""
        if self.metric is Metric.ACCURACY_DROP_PTS:
            return self.value
        if self.metric is Metric.TOP1_AGREEMENT:
            return 100.0 * (1.0 - self.value)
        return None

    def text(self) -> str:
        """Short table text, e.g. ``min cosine 0.9931``, ``top-1 agreement 98.44%``."""
        v = self.value
        shown = {Metric.TOP1_AGREEMENT: f"{100 * v:.2f}%", Metric.ACCURACY_DROP_PTS: f"{v:.2f} pts",
                 Metric.COSINE_MIN: f"{v:.4f}", Metric.REL_MAX_ABS: f"{100 * v:.3g}%",
                 Metric.PSNR_DB: f"{v:.1f} dB"}[self.metric]
        return f"{LABELS[self.metric]} {shown}"

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric.value, "value": self.value, "higher_is_better": self.higher_is_better,
                "budget": self.budget, "passed": self.passed, "task": self.task, "source": self.source,
                "label": LABELS[self.metric], "text": self.text()}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "Fidelity | None":
        if not d:
            return None
        m = Metric(d["metric"])
        return cls(m, float(d["value"]), bool(d.get("higher_is_better", HIGHER_IS_BETTER[m])), d.get("budget"),
                   d.get("passed"), d.get("task"), d.get("source", "manifest"))


#: a text model (integer inputs) with this many output features or more is an encoder, not a classifier
TEXT_EMBED_MIN_DIM = 32


def infer_task(outputs: Sequence[dict[str, Any]], *, labels: bool,
               inputs: Sequence[dict[str, Any]] = ()) -> str:
    """The task a model's IO suggests, when nobody recorded one (an older manifest).

    Labels in the validation set mean a classifier. An output named like an embedding is one.
    A 2-D output ``[N, C]`` (``C >= 2``) of a model fed token ids (integer inputs) with
    ``C >= 32`` is a sentence embedding (text classifiers have a few labels); other 2-D outputs
    are class scores. Anything else (dense maps, one value per sample) is a regression-like
    output judged by its error. Record the task (``edgeship compile --task``) to be sure.
    """
    if labels:
        return "classify"
    first = outputs[0] if outputs else {}
    name, shape = str(first.get("name") or ""), list(first.get("shape") or [])
    if _EMBED_NAME.search(name):
        return "embed"
    if len(shape) == 2 and isinstance(shape[1], int) and shape[1] >= 2:
        text = bool(inputs) and all(str(i.get("dtype", "")).startswith(("int", "uint")) for i in inputs)
        return "embed" if text and shape[1] >= TEXT_EMBED_MIN_DIM else "classify"
    return "regress" if len(shape) <= 2 else "detect"


def task_of(manifest: dict[str, Any], verification: dict[str, Any] | None = None) -> tuple[str, bool]:
    """(task, recorded?) of a build: ``verification.task`` or ``model.metadata.task`` when
    recorded, else :func:`infer_task` from the IO spec and the validation labels."""
    ver = verification or {}
    model = manifest.get("model") or {}
    recorded = ver.get("task") or (model.get("metadata") or {}).get("task") or model.get("task")
    if recorded in TASKS:
        return recorded, True
    labels = bool((manifest.get("validation") or {}).get("labels"))
    io = manifest.get("io") or {}
    return infer_task(io.get("outputs") or [], labels=labels, inputs=io.get("inputs") or []), False


def from_verification(ver: dict[str, Any] | None, *, task: str | None) -> Fidelity | None:
    """The artifact's fidelity: the compile side's ``fidelity`` block when present, else the
    metric ``task`` calls for, from the raw figures of an older manifest. None when the
    verification holds no usable figure."""
    if not ver:
        return None
    block = ver.get("fidelity")
    if isinstance(block, dict) and block.get("metric") in Metric._value2member_map_ and block.get("value") is not None:
        m = Metric(block["metric"])
        hib = block.get("higher_is_better")
        return Fidelity(m, float(block["value"]), HIGHER_IS_BETTER[m] if hib is None else bool(hib),
                        block.get("budget"), block.get("passed", ver.get("passed")), ver.get("task") or task)
    return _legacy(ver, task)


def _legacy(ver: dict[str, Any], task: str | None) -> Fidelity | None:
    passed = ver.get("passed")
    tol = ver.get("tolerances") or {}

    def make(metric: Metric, budget=None) -> Fidelity | None:
        v = ver.get(metric.value)
        if v is None:
            return None
        return Fidelity(metric, float(v), HIGHER_IS_BETTER[metric], budget, passed, task, "legacy")

    if task == "classify":
        return (make(Metric.ACCURACY_DROP_PTS, tol.get("max_accuracy_drop_pts"))
                or make(Metric.TOP1_AGREEMENT) or make(Metric.COSINE_MIN, tol.get("min_cosine")))
    # embeddings, dense maps and regressions: the cosine the old gate used; never top-1
    return make(Metric.COSINE_MIN, tol.get("min_cosine"))


def common_metric(fids: Sequence[Fidelity | None]) -> Metric | None:
    """The metric most artifacts of one result share (ties: the first seen)."""
    counts: dict[Metric, int] = {}
    for f in fids:
        if f is not None:
            counts[f.metric] = counts.get(f.metric, 0) + 1
    return max(counts, key=lambda m: counts[m]) if counts else None
