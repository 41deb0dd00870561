"""Task-aware fidelity: which figure judges each output, its default budget, the verdict.

Pure numpy, no I/O: every function takes arrays and values and returns values, so the
compile gate, bench/reports (which read the manifest block this produces) and the
accuracy-aware int8 loop (which calls :func:`score` on candidate graphs) share one
definition.

Invariants:

- Arrays hold **samples along axis 0** (``[N, ...]``); the pipeline lays outputs out so.
- Each output is judged by the metric its task calls for (:data:`TASK_METRIC`):

  ==========  ==========================================================================
  classify    ``top1_agreement`` (argmax over the last axis, per position); with labels
              the build-level figure is ``accuracy_drop_pts`` (reference minus artifact)
  embed       ``cosine_min`` (worst per-sample cosine); a sample whose max-abs error is
              within :data:`EXACT_REL_TOL` of the output's range counts as 1.0, so an
              exact artifact never fails on a near-constant or all-zero output
  detect /    ``rel_max_abs``: max abs error divided by the reference output's range
  segment /   (max - min over all samples); ``psnr_db`` is reported beside it
  regress
  ==========  ==========================================================================

- A model-level task applies to the outputs it fits; the others keep their own inferred
  task (``classify`` fits an output with a last axis of 2 or more that is not a regression
  head; ``embed`` one with 2 or more values per sample; the dense tasks fit any output).
- A **regression head** (:func:`is_regression_head`) is never judged by top-1 agreement: an
  output named like boxes, landmarks or offsets (:data:`_REGRESS_NAMES`) whose name does not
  also say class scores and whose rows are not probabilities is ``regress`` (``rel_max_abs``),
  even in a ``classify`` model (MTCNN O-Net: ``bbox_regression`` and ``landmarks`` beside
  ``face_probability``). ``--task detect|segment|regress|embed`` still applies to it.
- Budgets are per metric and precision family (:data:`DEFAULT_BUDGETS`); ``None`` means
  "reported, not gated".
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

# one definition of "exact" (an error within EXACT_REL_TOL of the range), shared with the
# device's golden gate
from runtime.numerics import EXACT_REL_TOL, output_range


class Task(str, enum.Enum):
    """What a model's outputs mean. Values round-trip through ``--task`` and JSON."""

    CLASSIFY = "classify"
    EMBED = "embed"
    DETECT = "detect"
    SEGMENT = "segment"
    REGRESS = "regress"

    @classmethod
    def parse(cls, text: "str | Task") -> "Task":
        """``"classify"`` -> ``Task.CLASSIFY``.

        Raises:
            ValueError: an unknown task (the message lists the choices).
        """
        try:
            return cls(_ALIASES.get(str(getattr(text, "value", text)).lower(), text))
        except ValueError:
            raise ValueError(f"unknown task {text!r}; choose one of {[t.value for t in cls]}") from None


#: the nouns factories write in ``metadata["task"]`` -> the task
_ALIASES = {"classification": "classify", "embedding": "embed", "detection": "detect",
            "segmentation": "segment", "regression": "regress"}


class Metric(str, enum.Enum):
    TOP1_AGREEMENT = "top1_agreement"
    ACCURACY_DROP_PTS = "accuracy_drop_pts"
    COSINE_MIN = "cosine_min"
    REL_MAX_ABS = "rel_max_abs"
    PSNR_DB = "psnr_db"

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.TOP1_AGREEMENT, Metric.COSINE_MIN, Metric.PSNR_DB)


TASK_METRIC: dict[Task, Metric] = {
    Task.CLASSIFY: Metric.TOP1_AGREEMENT,
    Task.EMBED: Metric.COSINE_MIN,
    Task.DETECT: Metric.REL_MAX_ABS,
    Task.SEGMENT: Metric.REL_MAX_ABS,
    Task.REGRESS: Metric.REL_MAX_ABS,
}

#: metric -> precision family -> default budget (min for higher-is-better, else max)
DEFAULT_BUDGETS: dict[Metric, dict[str, float | None]] = {
    Metric.TOP1_AGREEMENT: {"fp32": 0.99, "fp16": 0.98, "int8": 0.90},
    Metric.COSINE_MIN: {"fp32": 0.9999, "fp16": 0.995, "int8": 0.98},
    Metric.REL_MAX_ABS: {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.15},
    Metric.ACCURACY_DROP_PTS: {"fp32": None, "fp16": None, "int8": None},
    Metric.PSNR_DB: {"fp32": None, "fp16": None, "int8": None},
}

_CLASSIFY_NAMES = re.compile(r"logit|prob|score|class|cls|softmax|pred", re.I)
#: names of regression heads: box coordinates or deltas, landmarks, keypoints, offsets
_REGRESS_NAMES = re.compile(r"box|landmark|keypoint|regress|offset|coord|delta", re.I)
#: words that say class scores even beside a regression word (``box_scores``; ``pred`` does
#: not: ``bbox_pred`` is a box regression)
_CLASS_WORDS = re.compile(r"logit|prob|score|class|cls|softmax", re.I)
_EMBED_NAMES = re.compile(r"embed|feature|hidden|pool|vector|encod|last_hidden", re.I)


def precision_family(precision: Any) -> str:
    """``"int8-static"`` / ``Precision.INT8`` -> ``"int8"``; fp32 and fp16 stay."""
    p = str(getattr(precision, "value", precision))
    return "int8" if p.startswith("int8") else p


def default_budget(metric: Metric, precision: Any) -> float | None:
    return DEFAULT_BUDGETS[Metric(metric)].get(precision_family(precision))


# -- which task ---------------------------------------------------------------------

def infer_output_task(name: str, ref: np.ndarray, *, labels: bool = False) -> Task:
    """The task an output looks like from its name, shape and values (samples on axis 0)."""
    a = np.asarray(ref)
    if not np.issubdtype(a.dtype, np.floating):
        return Task.CLASSIFY if a.ndim >= 1 else Task.REGRESS  # ids / argmax indices: agreement
    per_sample = int(np.prod(a.shape[1:])) if a.ndim > 1 else 1
    if per_sample < 2 or a.ndim < 2:
        return Task.REGRESS
    if a.ndim >= 4:
        return Task.SEGMENT  # dense maps [N, C, H, W]
    if is_regression_head(name, a):
        return Task.REGRESS
    if _CLASSIFY_NAMES.search(name) and a.shape[-1] >= 2:
        return Task.CLASSIFY
    if _EMBED_NAMES.search(name):
        return Task.EMBED
    if a.shape[-1] >= 2 and _rows_are_probabilities(a):
        return Task.CLASSIFY
    if a.ndim == 2 and _rows_unit_norm(a):
        return Task.EMBED
    if a.ndim == 2 and a.shape[-1] >= 2 and (labels or a.shape[-1] <= 1000):
        return Task.CLASSIFY
    return Task.EMBED


def infer_task(reference_outputs: Mapping[str, np.ndarray], *, labels: bool = False) -> Task:
    """The model's default task: that of its first output that is not a regression head (O-Net's
    ``face_probability`` after its ``bbox_regression``), else of its first output."""
    items = list(reference_outputs.items())
    name, arr = next(((n, a) for n, a in items if not is_regression_head(n, np.asarray(a))), items[0])
    return infer_output_task(name, arr, labels=labels)


def output_tasks(task: Task | None, reference_outputs: Mapping[str, np.ndarray], *,
                 labels: bool = False) -> dict[str, Task]:
    """Per output: the model task where it fits the output, else the output's own task."""
    out = {}
    for name, arr in reference_outputs.items():
        own = infer_output_task(name, arr, labels=labels)
        out[name] = task if task is not None and _fits(task, name, np.asarray(arr)) else own
    return out


def primary_output(task: Task, reference_outputs: Mapping[str, np.ndarray], *, labels: bool = False) -> str:
    """The output the build-level figure (and the recorded accuracy) is taken from: the first
    whose task is the model's (O-Net's ``face_probability``, not its ``bbox_regression``), else
    the first output."""
    return _primary(task, output_tasks(task, reference_outputs, labels=labels))


def _primary(task: Task, tasks: Mapping[str, Task]) -> str:
    return next((k for k, t in tasks.items() if t is task), next(iter(tasks)))


def is_regression_head(name: str, ref: np.ndarray) -> bool:
    """True for a float output named like a regression (box, landmark, keypoint, regress,
    offset, coord, delta) whose name has no class-score word (logit, prob, score, class, cls,
    softmax) and whose rows are not probabilities: its argmax means nothing."""
    a = np.asarray(ref)
    if not _REGRESS_NAMES.search(name) or _CLASS_WORDS.search(name) or not np.issubdtype(a.dtype, np.floating):
        return False
    return not (a.ndim >= 2 and a.shape[-1] >= 2 and a.size and _rows_are_probabilities(a))


def pick_class_output(candidates: Mapping[str, np.ndarray]) -> str | None:
    """The class-score output among ``candidates`` ([samples, classes] arrays, in output order):
    the first float one whose name says so (logits, prob, score, class, ...) or whose rows are
    probabilities, else the first one (a single-output classifier keeps its only output)."""
    two_d = {n: np.asarray(a) for n, a in candidates.items() if np.ndim(a) == 2 and np.shape(a)[-1] >= 2}
    for name, a in two_d.items():
        floating = a.size and np.issubdtype(a.dtype, np.floating)
        if floating and (_CLASSIFY_NAMES.search(name) or _rows_are_probabilities(a)):
            return name
    return next(iter(two_d), None)


def _fits(task: Task, name: str, a: np.ndarray) -> bool:
    if task is Task.CLASSIFY:
        return a.ndim >= 2 and a.shape[-1] >= 2 and not is_regression_head(name, a)
    if task is Task.EMBED:
        return a.ndim >= 2 and int(np.prod(a.shape[1:])) >= 2 and np.issubdtype(a.dtype, np.floating)
    return True


def _rows_are_probabilities(a: np.ndarray) -> bool:
    a64 = a.astype(np.float64)
    return bool(a64.min() >= 0 and a64.max() <= 1 and np.allclose(a64.sum(-1), 1.0, atol=1e-3))


def _rows_unit_norm(a: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(a.astype(np.float64), axis=-1), 1.0, atol=1e-3))


# -- figures --------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputScore:
    """One output's figure under its task's metric, plus the other figures for the record."""

    name: str
    task: Task
    metric: Metric
    value: float
    figures: Mapping[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"task": self.task.value, "metric": self.metric.value, "value": self.value, **dict(self.figures)}


@dataclass(frozen=True)
class Score:
    """Per-output scores and the build-level figure (the primary output's, or the accuracy drop)."""

    task: Task
    metric: Metric
    value: float
    primary: str
    per_output: Mapping[str, OutputScore]
    accuracy: float | None = None
    reference_accuracy: float | None = None
    samples: int = 0


def score(task: Task | str | None, reference_outputs: Mapping[str, np.ndarray],
          artifact_outputs: Mapping[str, np.ndarray], *, labels: np.ndarray | None = None) -> Score:
    """Score artifact outputs against reference outputs (same names, samples on axis 0).

    ``task`` None infers it (:func:`infer_task`). With ``labels`` (one int per sample) and a
    classifier-shaped primary output, the build-level figure is the accuracy drop in points.

    Raises:
        ValueError: an output is missing or its shape differs from the reference's.
    """
    has_labels = labels is not None
    task = infer_task(reference_outputs, labels=has_labels) if task is None else Task.parse(task)
    tasks = output_tasks(task, reference_outputs, labels=has_labels)
    per = {}
    for name, ref in reference_outputs.items():
        if name not in artifact_outputs:
            raise ValueError(f"output {name!r} missing from the artifact's outputs {sorted(artifact_outputs)}")
        per[name] = score_output(name, tasks[name], np.asarray(ref), np.asarray(artifact_outputs[name]))
    primary = _primary(task, tasks)
    head = per[primary]
    n = len(np.asarray(reference_outputs[primary]))
    if has_labels and head.task is Task.CLASSIFY:
        ref_acc = top1_accuracy(reference_outputs[primary], labels)
        acc = top1_accuracy(artifact_outputs[primary], labels)
        drop = round((ref_acc - acc) * 100, 4)
        return Score(task=task, metric=Metric.ACCURACY_DROP_PTS, value=drop, primary=primary, per_output=per,
                     accuracy=acc, reference_accuracy=ref_acc, samples=n)
    return Score(task=task, metric=head.metric, value=head.value, primary=primary, per_output=per, samples=n)


def score_output(name: str, task: Task, ref: np.ndarray, cand: np.ndarray) -> OutputScore:
    """One output under ``task``'s metric. Raises ValueError on a shape mismatch."""
    if ref.shape != cand.shape:
        raise ValueError(f"output {name!r}: artifact shape {list(cand.shape)} differs from the reference's {list(ref.shape)}")
    metric = TASK_METRIC[task]
    dense = dense_figures(ref, cand)
    if task is Task.CLASSIFY:
        value = top1_agreement(ref, cand)
    elif task is Task.EMBED:
        value = cosine_min(ref, cand)
    else:
        value = dense["rel_max_abs"]
    return OutputScore(name=name, task=task, metric=metric, value=float(value), figures=dense)


def top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """Share of positions whose argmax (last axis) agrees; integer outputs: share of equal values."""
    if not np.issubdtype(ref.dtype, np.floating):
        return float((ref == cand).mean()) if ref.size else 1.0
    return float((ref.argmax(-1) == cand.argmax(-1)).mean()) if ref.size else 1.0


def top1_accuracy(out: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(out).reshape(len(labels), -1).argmax(1) == np.asarray(labels)).mean())


def cosine_min(ref: np.ndarray, cand: np.ndarray) -> float:
    """Worst per-sample cosine; exact samples (see :data:`EXACT_REL_TOL`) count as 1.0."""
    n = len(ref)
    r = ref.astype(np.float64).reshape(n, -1)
    c = cand.astype(np.float64).reshape(n, -1)
    if not np.all(np.isfinite(c)):
        return float("nan")
    exact = np.abs(r - c).max(axis=1, initial=0.0) <= EXACT_REL_TOL * output_range(ref)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    cos = np.where(den > 0, (r * c).sum(axis=1) / np.maximum(den, 1e-300), 0.0)
    cos = np.where(exact, 1.0, cos)
    return float(cos.min()) if n else 1.0


def dense_figures(ref: np.ndarray, cand: np.ndarray) -> dict[str, float | None]:
    """``max_abs_error``, ``rel_max_abs`` (to the reference range) and ``psnr_db`` (peak = range)."""
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    if not r.size:
        return {"max_abs_error": 0.0, "rel_max_abs": 0.0, "psnr_db": None}
    diff = np.abs(r - c)
    if not np.all(np.isfinite(diff)):
        return {"max_abs_error": float("nan"), "rel_max_abs": float("nan"), "psnr_db": None}
    span = output_range(ref)
    mse = float((diff**2).mean())
    psnr = None if mse == 0 else 10 * math.log10(span**2 / mse)
    return {"max_abs_error": float(diff.max()), "rel_max_abs": float(diff.max() / span),
            "psnr_db": None if psnr is None else round(psnr, 3)}


# -- verdict --------------------------------------------------------------------------

@dataclass(frozen=True)
class Budgets:
    """Overrides of the default budgets (None: the precision's default for that metric)."""

    by_metric: Mapping[Metric, float | None] = field(default_factory=dict)

    def for_metric(self, metric: Metric, precision: Any) -> float | None:
        if metric in self.by_metric:
            return self.by_metric[metric]
        return default_budget(metric, precision)


def breaches(value: float, metric: Metric, budget: float | None) -> bool:
    if budget is None:
        return False
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return value < budget if metric.higher_is_better else value > budget


def judge(sc: Score, *, precision: Any, budgets: Budgets | None = None,
          samples_slack: bool = False) -> tuple[bool, list[str], float | None]:
    """Gate every output on its metric's budget, and the build-level figure on its own.

    ``samples_slack`` lets top-1 agreement lose one decision of the ``samples`` scored (a probe
    of a few samples, where one flipped argmax is noise, not a broken artifact).

    Returns ``(passed, failures, build_level_budget)``; each failure names the output, the
    metric, its value and the budget.
    """
    budgets = budgets or Budgets()
    failures = []
    for name, o in sc.per_output.items():
        b = budgets.for_metric(o.metric, precision)
        if samples_slack and b is not None and o.metric is Metric.TOP1_AGREEMENT and sc.samples:
            b = min(b, 1.0 - 1.0 / sc.samples)
        if breaches(o.value, o.metric, b):
            failures.append(f"{name}: {o.metric.value} {_fmt(o.value)} {'<' if o.metric.higher_is_better else '>'} "
                            f"budget {b:g} ({o.task.value})")
    top = budgets.for_metric(sc.metric, precision)
    if sc.metric is Metric.ACCURACY_DROP_PTS and breaches(sc.value, sc.metric, top):
        failures.append(f"accuracy_drop_pts {sc.value:.2f} > max_accuracy_drop {top:g}")
    return not failures, failures, top


def fidelity_json(sc: Score, *, passed: bool, budget: float | None) -> dict:
    """The manifest's ``verification.fidelity`` block (a contract bench and reports read)."""
    return {
        "metric": sc.metric.value, "value": sc.value, "higher_is_better": sc.metric.higher_is_better,
        "budget": budget, "passed": passed, "primary_output": sc.primary,
        "per_output": {n: o.to_json() for n, o in sc.per_output.items()},
    }


def _fmt(v: float) -> str:
    return "nan" if v is None or math.isnan(v) else f"{v:.6g}"
