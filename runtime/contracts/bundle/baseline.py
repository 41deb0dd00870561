"""The drift baseline of a bundle (``model.json`` ``drift``, schema_version 2): what live
traffic is compared with on the device, and the thresholds it is judged by.

Built by ``edgeship package`` from the build's validation data (``runtime.drift.reference``),
read by the agent's drift monitor (``device_agent.monitoring.drift``). Pure values; strict
``from_json`` that refuses a broken baseline (unsorted or non-finite edges, more than
:data:`MAX_EDGES` of them, a tensor's edges outside its [min, max], proportions that are
negative or do not sum to 1, a length mismatch), naming the key path (and so the tensor).

Binning (one definition, ``runtime.drift.binning``: ``bin_counts`` at package time, the same
order in ``runtime.drift.sketch`` on the device): ``edges`` are the inner cut points, strictly
increasing; a value ``x`` falls in bin ``searchsorted(edges, x, "left")``, so bin 0 is
``x <= edges[0]`` and the last bin is ``x > edges[-1]``: ``len(edges) + 1`` bins, and
``proportions`` holds the validation data's share of each.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import BundleError
from . import _strict as strict

#: a bin layout's proportions must sum to 1 within this
SUM_TOLERANCE = 1e-6
#: the most inner edges a distribution may have (``edgeship package`` writes at most 9: deciles);
#: bounds the device's sketch (bins x features x window) and its per-value binning work
MAX_EDGES = 64


class Role(str, enum.Enum):
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class Bins:
    """Quantile bins of a distribution and the reference share of each."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "proportions": list(self.proportions)}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "Bins":
        d = strict.obj(d, {"edges", "proportions"}, where)
        edges = tuple(strict.number(v, f"{where}.edges[{i}]") for i, v in enumerate(strict.array(d["edges"], f"{where}.edges")))
        props = tuple(strict.number(v, f"{where}.proportions[{i}]")
                      for i, v in enumerate(strict.array(d["proportions"], f"{where}.proportions")))
        if len(edges) > MAX_EDGES:
            raise BundleError(f"{where}.edges: {len(edges)} edges, at most {MAX_EDGES} are allowed")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise BundleError(f"{where}.edges: must be strictly increasing")
        _check_shares(props, len(edges) + 1, f"{where}.proportions")
        return cls(edges=edges, proportions=props)


@dataclass(frozen=True)
class TensorBaseline:
    """One input or output tensor: all its values pooled (``values``), and per feature when it
    is small, on the same edges (``feature_proportions``: one share per bin for each feature).

    ``feature_axis``: the features are the elements of one sample flattened (``"flat"``) or the
    channels of axis 1 (``"channel"``); None when the tensor has no per-feature view."""

    role: Role
    min: float
    max: float
    values: Bins
    feature_axis: str | None = None
    feature_proportions: tuple[tuple[float, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role.value, "min": self.min, "max": self.max, "values": self.values.to_json(),
                "feature_axis": self.feature_axis, "feature_proportions": [list(f) for f in self.feature_proportions]}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "TensorBaseline":
        d = strict.obj(d, {"role", "min", "max", "values", "feature_axis", "feature_proportions"}, where)
        lo, hi = strict.number(d["min"], f"{where}.min"), strict.number(d["max"], f"{where}.max")
        if lo > hi:
            raise BundleError(f"{where}: min {lo} is above max {hi}")
        values = Bins.from_json(d["values"], where=f"{where}.values")
        e = values.edges
        if e and not lo <= e[0] <= e[-1] <= hi:  # the sketch's bins (below min, edges, above max) are in order
            raise BundleError(f"{where}.values.edges: must lie within min {lo} and max {hi}, "
                              f"got {e[0]} .. {e[-1]}")
        axis = d["feature_axis"]
        if axis not in (None, "flat", "channel"):
            raise BundleError(f"{where}.feature_axis: {axis!r} is not null, 'flat' or 'channel'")
        feats = []
        for i, f in enumerate(strict.array(d["feature_proportions"], f"{where}.feature_proportions")):
            w = f"{where}.feature_proportions[{i}]"
            props = tuple(strict.number(v, f"{w}[{j}]") for j, v in enumerate(strict.array(f, w)))
            _check_shares(props, len(values.proportions), w)
            feats.append(props)
        if (axis is None) != (not feats):
            raise BundleError(f"{where}: feature_axis and feature_proportions must be given together")
        return cls(role=strict.enum_value(Role, d["role"], f"{where}.role"), min=lo, max=hi, values=values,
                   feature_axis=axis, feature_proportions=tuple(feats))


def _check_shares(props: tuple[float, ...], n: int, where: str) -> None:
    if len(props) != n:
        raise BundleError(f"{where}: {len(props)} values, need {n} (one per bin)")
    if any(p < 0 or p > 1 for p in props) or not math.isclose(sum(props), 1.0, abs_tol=SUM_TOLERANCE):
        raise BundleError(f"{where}: must be shares in [0, 1] summing to 1, got sum {sum(props):.6g}")


@dataclass(frozen=True)
class ClassBaseline:
    """A classifier's output: the share of each predicted class (argmax over the last axis)
    and the distribution of its confidence (the softmax maximum)."""

    output: str
    proportions: tuple[float, ...]
    confidence: Bins
    #: the output holds logits (confidence = max of their softmax); False: it holds probabilities
    softmax: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "proportions": list(self.proportions), "confidence": self.confidence.to_json(),
                "softmax": self.softmax}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "ClassBaseline":
        d = strict.obj(d, {"output", "proportions", "confidence", "softmax"}, where)
        if not isinstance(d["softmax"], bool):
            raise BundleError(f"{where}.softmax: expected true or false")
        props = tuple(strict.number(v, f"{where}.proportions[{i}]")
                      for i, v in enumerate(strict.array(d["proportions"], f"{where}.proportions")))
        if len(props) < 2 or any(p < 0 or p > 1 for p in props) or not math.isclose(sum(props), 1.0,
                                                                                     abs_tol=SUM_TOLERANCE):
            raise BundleError(f"{where}.proportions: need >= 2 class shares in [0, 1] summing to 1")
        return cls(output=strict.string(d["output"], f"{where}.output"), proportions=props,
                   confidence=Bins.from_json(d["confidence"], where=f"{where}.confidence"), softmax=d["softmax"])


@dataclass(frozen=True)
class DriftThresholds:
    """When a score counts as drift (set at package time; the agent's ``[drift]`` may override).

    ``psi``: population stability index of a tensor, the class mix or the confidence
    (0.1 is a moderate shift, 0.25 a large one by the usual rule of thumb); ``out_of_range_share``:
    share of values outside the validation [min, max]; ``nonfinite_share``: share of NaN/Inf."""

    psi: float = 0.25
    out_of_range_share: float = 0.05
    nonfinite_share: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"psi": self.psi, "out_of_range_share": self.out_of_range_share,
                "nonfinite_share": self.nonfinite_share}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "DriftThresholds":
        d = strict.obj(d, {"psi", "out_of_range_share", "nonfinite_share"}, where)
        t = cls(psi=strict.positive(d["psi"], f"{where}.psi"),
                out_of_range_share=strict.number(d["out_of_range_share"], f"{where}.out_of_range_share"),
                nonfinite_share=strict.number(d["nonfinite_share"], f"{where}.nonfinite_share"))
        t.check(where)
        return t

    def check(self, where: str) -> None:
        """Raises BundleError when a threshold is out of its range."""
        if not (self.psi > 0 and 0 <= self.out_of_range_share < 1 and 0 <= self.nonfinite_share < 1):
            raise BundleError(f"{where}: psi must be > 0 and the shares in [0, 1)")


@dataclass(frozen=True)
class DriftBaseline:
    samples: int
    thresholds: DriftThresholds
    tensors: Mapping[str, TensorBaseline]
    classes: ClassBaseline | None = None

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "thresholds": self.thresholds.to_json(),
                "tensors": {k: v.to_json() for k, v in sorted(self.tensors.items())},
                "classes": self.classes.to_json() if self.classes else None}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "DriftBaseline":
        d = strict.obj(d, {"samples", "thresholds", "tensors", "classes"}, where)
        tensors = d["tensors"]
        if not isinstance(tensors, dict) or not tensors:
            raise BundleError(f"{where}.tensors: expected a non-empty object")
        out = cls(samples=strict.integer(d["samples"], f"{where}.samples", minimum=1),
                  thresholds=DriftThresholds.from_json(d["thresholds"], where=f"{where}.thresholds"),
                  tensors={str(k): TensorBaseline.from_json(v, where=f"{where}.tensors.{k}") for k, v in tensors.items()},
                  classes=None if d["classes"] is None else ClassBaseline.from_json(d["classes"], where=f"{where}.classes"))
        if out.classes is not None and out.classes.output not in out.tensors:
            raise BundleError(f"{where}.classes.output: {out.classes.output!r} is not one of the tensors")
        return out
