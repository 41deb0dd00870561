"""Capture rules: when the agent keeps a request's tensors, and how much of them.

One rule = one trigger with a rate, a count and byte budget, a retention time and a priority.
The same dataclass is read from the agent config (``[[capture.rules]]``, by the agent's strict
TOML loader) and from a bundle's ``model.json`` (``capture.rules``, per release, by
:meth:`CapturePolicy.from_json`). Pure: values in, values out.

Triggers:
- ``sample``: a share (``rate``) of all successful requests.
- ``low_confidence``: the top-1 probability of the class output (``output``; left empty: the
  bundle's class output, that of its drift baseline's class mix, else the first output (a bundle
  without a baseline gets the decided class output written in at package time); softmax
  applied when the values are not already probabilities) is below ``threshold`` for a sample.
- ``disagreement``: the request carried an expected class (``expected``) and the model's top-1
  differs from it for a sample of the call.
- ``error``: the engine raised on the request (its inputs are kept, no outputs).
- ``drift``: a drift alarm was raised; the ``drift_samples`` recent calls that moved the score
  most are kept.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ...spec import TensorSpec, is_dynamic
from ..errors import BundleError

_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: the largest byte budget one rule may ask for (a device store is sized in MiB to GiB)
MAX_RULE_BYTES = 1 << 40


class Trigger(str, enum.Enum):
    SAMPLE = "sample"
    LOW_CONFIDENCE = "low_confidence"
    DISAGREEMENT = "disagreement"
    ERROR = "error"
    DRIFT = "drift"


#: triggers judged on a successful call's outputs (the rest: errors, drift alarms)
RESULT_TRIGGERS = frozenset({Trigger.SAMPLE, Trigger.LOW_CONFIDENCE, Trigger.DISAGREEMENT})
#: triggers that read a class-score output (the top-1 probability and class)
CLASS_TRIGGERS = frozenset({Trigger.LOW_CONFIDENCE, Trigger.DISAGREEMENT})


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class CaptureRule:
    """One capture rule (``[[capture.rules]]`` in agent.toml, ``capture.rules[]`` in model.json)."""

    name: str = _doc("The rule's name: 1-64 of [A-Za-z0-9._-]; captures record it.", "")
    trigger: Trigger = _doc("sample, low_confidence, disagreement, error or drift.", Trigger.SAMPLE)
    rate: float = _doc("Share of the matching requests captured, 0..1 (for sample: the sampling rate). Left "
                       "out: 0.01 for sample, 1.0 for the other triggers (every match is kept).", math.nan)
    threshold: float = _doc("low_confidence: capture when the top-1 probability is below this.", 0.5)
    output: str = _doc("low_confidence/disagreement: the class-score output; empty = the bundle's class output "
                       "(its drift baseline's class mix), else the first output.", "")
    drift_samples: int = _doc("drift: the recent calls kept per alarm (those that moved the score most).", 32)
    max_count: int = _doc("Captures of this rule kept at most; the oldest go first.", 1000)
    max_bytes: int = _doc("Bytes of this rule's captures kept at most; the oldest go first.", 64 << 20)
    retention_s: float = _doc("Captures older than this are deleted.", 7 * 86400.0)
    priority: int = _doc("When the store's disk budget is short, captures of lower priority go first.", 0)

    def __post_init__(self) -> None:
        if isinstance(self.rate, float) and math.isnan(self.rate):  # left out: the trigger's default
            object.__setattr__(self, "rate", default_rate(self.trigger))

    def problems(self) -> list[str]:
        """What is wrong with the rule's values (empty when it is fine)."""
        out = []
        if not _RULE_NAME.match(self.name or ""):
            out.append(f"name {self.name!r} must be 1-64 of [A-Za-z0-9._-], starting alphanumeric")
        if not 0.0 <= self.rate <= 1.0:
            out.append(f"rate {self.rate} must be in [0, 1]")
        if not 0.0 <= self.threshold <= 1.0:
            out.append(f"threshold {self.threshold} must be in [0, 1]")
        if self.max_count < 1 or not 1 <= self.max_bytes <= MAX_RULE_BYTES:
            out.append(f"max_count ({self.max_count}) and max_bytes ({self.max_bytes}) must be >= 1")
        if self.retention_s <= 0:
            out.append(f"retention_s {self.retention_s} must be > 0")
        if self.drift_samples < 1:
            out.append(f"drift_samples {self.drift_samples} must be >= 1")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "trigger": self.trigger.value, "rate": self.rate, "threshold": self.threshold,
                "output": self.output, "drift_samples": self.drift_samples, "max_count": self.max_count,
                "max_bytes": self.max_bytes, "retention_s": self.retention_s, "priority": self.priority}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "CaptureRule":
        """Strict: every key present, none unknown. Raises BundleError naming the key."""
        from ..bundle import _strict as strict

        d = strict.obj(d, set(cls().to_json()), where)
        rule = cls(name=strict.string(d["name"], f"{where}.name"),
                   trigger=strict.enum_value(Trigger, d["trigger"], f"{where}.trigger"),
                   rate=strict.number(d["rate"], f"{where}.rate"),
                   threshold=strict.number(d["threshold"], f"{where}.threshold"),
                   output=_text(d["output"], f"{where}.output"),
                   drift_samples=strict.integer(d["drift_samples"], f"{where}.drift_samples"),
                   max_count=strict.integer(d["max_count"], f"{where}.max_count"),
                   max_bytes=strict.integer(d["max_bytes"], f"{where}.max_bytes"),
                   retention_s=strict.number(d["retention_s"], f"{where}.retention_s"),
                   priority=strict.integer(d["priority"], f"{where}.priority"))
        bad = rule.problems()
        if bad:
            raise BundleError(f"{where}: {'; '.join(bad)}")
        return rule

    @classmethod
    def from_table(cls, d: Any, *, where: str) -> "CaptureRule":
        """A rule as the agent config writes it: any key left out takes its default (the rest as
        strict as :meth:`from_json`: unknown keys, wrong types and bad values are refused)."""
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected a table, got {type(d).__name__}")
        full = {**cls().to_json(), **d}
        if "rate" not in d:
            full["rate"] = default_rate(full["trigger"])
        return cls.from_json(full, where=where)


def default_rate(trigger: Any) -> float:
    """The ``rate`` of a rule written without one: 0.01 for ``sample`` (a sampling rate), 1.0 for
    the triggers that already select (low_confidence, disagreement, error, drift: keep every match)."""
    return 0.01 if trigger in (Trigger.SAMPLE, Trigger.SAMPLE.value) else 1.0


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise BundleError(f"{where}: expected a string, got {v!r}")
    return v


def judged_output(rule: CaptureRule, default: str = "") -> str:
    """The output a low_confidence/disagreement rule reads: its ``output``, else ``default`` (the
    bundle's class output, ``BundleInfo.class_output``); "" means the model's first output."""
    return rule.output or default


def class_output_problem(rule: CaptureRule, outputs: Sequence[TensorSpec], default: str = "") -> str | None:
    """Why ``rule`` cannot judge this model's outputs (None when it can, or needs no class output).

    A low_confidence/disagreement rule reads :func:`judged_output` (``default``: the bundle's
    class output; neither set: the first output), which must be an output of the model, of a
    float type, with a class axis last (2 or more classes, or a dynamic size)."""
    if rule.trigger not in CLASS_TRIGGERS:
        return None
    have = describe_outputs(outputs)
    scores = [o.name for o in outputs if _class_scores(o)]
    hint = f"set output to one of {scores}" if scores else "the model has no float class-score output"
    name = judged_output(rule, default)
    spec = next((o for o in outputs if o.name == name), None) if name else next(iter(outputs), None)
    if spec is None:
        return (f"capture rule {rule.name!r} ({rule.trigger.value}): output {name!r} is not an output of the "
                f"model (outputs: {have})")
    if not _class_scores(spec):
        which = (f"output {rule.output!r}" if rule.output else f"the bundle's class output ({spec.name!r}, output "
                 f"unset)" if default else f"the first output ({spec.name!r}, output unset)")
        return (f"capture rule {rule.name!r} ({rule.trigger.value}) needs a float class-score output [..., classes]; "
                f"{which} is {spec.describe()}: {hint} (outputs: {have})")
    return None


def describe_outputs(outputs: Sequence[TensorSpec]) -> str:
    """``"y float32[batch, 3], z int64[batch]"`` (``"none"``): the outputs an error names."""
    return ", ".join(f"{o.name} {o.describe()}" for o in outputs) or "none"


def _class_scores(spec: TensorSpec) -> bool:
    """Can this output be a class-score tensor: float, with a last axis of 2+ classes (or dynamic)."""
    try:
        floating = np.issubdtype(np.dtype(spec.dtype), np.floating)
    except TypeError:
        return False
    return floating and bool(spec.shape) and (is_dynamic(spec.shape[-1]) or spec.shape[-1] >= 2)


def duplicate_names(rules: tuple[CaptureRule, ...]) -> list[str]:
    seen: set[str] = set()
    return sorted({r.name for r in rules if r.name in seen or seen.add(r.name)})


@dataclass(frozen=True)
class CapturePolicy:
    """The capture rules a release ships with (``model.json`` ``capture``). They apply only on
    devices whose owner turned capture on (``[capture] enabled``, ``use_bundle_rules``)."""

    rules: tuple[CaptureRule, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r.to_json() for r in self.rules]}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "CapturePolicy":
        """Raises BundleError (unknown/missing keys, bad values, duplicate rule names)."""
        from ..bundle import _strict as strict

        d = strict.obj(d, {"rules"}, where)
        rules = tuple(CaptureRule.from_json(r, where=f"{where}.rules[{i}]")
                      for i, r in enumerate(strict.array(d["rules"], f"{where}.rules")))
        dup = duplicate_names(rules)
        if dup:
            raise BundleError(f"{where}.rules: duplicate rule name(s) {dup}")
        return cls(rules=rules)


@dataclass(frozen=True)
class Clamp:
    """A rule whose byte budget is larger than the store's disk budget, and what it got."""

    rule: str
    asked_bytes: int
    granted_bytes: int

    def describe(self) -> str:
        return (f"capture rule {self.rule!r}: max_bytes {self.asked_bytes} clamped to the store's disk budget "
                f"{self.granted_bytes}")


def clamp_rules(rules: tuple[CaptureRule, ...], *, disk_budget_bytes: int) -> tuple[tuple[CaptureRule, ...], list[Clamp]]:
    """Clamp every rule's byte budget to the disk budget (each clamp reported). Rules whose
    budgets add up to more than the disk share it: when it is full, the store evicts the oldest
    captures of the lowest priority first (``device_agent.capture.policy.admit``)."""
    budget = max(0, disk_budget_bytes)
    out, clamps = [], []
    for r in rules:
        if r.max_bytes > budget:
            clamps.append(Clamp(r.name, r.max_bytes, budget))
            r = replace(r, max_bytes=budget)
        out.append(r)
    return tuple(out), clamps
