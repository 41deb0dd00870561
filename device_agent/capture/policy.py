"""The decisions of capture, as pure functions: which rules apply to a model, which fire on a
call, which stored captures make room for a new one, which have expired.

No I/O and no clocks: the recorder and the store (the shell) pass values in and act on the
answers. Budget rules, in the order they are applied to a new capture of rule R:

1. a capture larger than R's ``max_bytes`` is refused (``too_large``);
2. R's own budget: R's oldest captures are evicted until R holds at most ``max_count - 1``
   captures and ``max_bytes - new`` bytes (a rule is a ring: it keeps its newest data);
3. the store's disk budget: the oldest captures of the lowest priority at or below R's go
   first (captures of rules no longer configured count as the lowest priority of all) until
   the new one fits; when only higher-priority captures are left it is refused
   (``disk_budget``) and nothing is evicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from runtime.contracts.capture.rules import RESULT_TRIGGERS, CaptureRule, Clamp, Trigger, clamp_rules, judged_output

#: why the store refuses a capture (:class:`Admission` ``reason``; the store adds ``disk_low``)
REFUSE_REASONS = ("too_large", "disk_budget", "disk_low", "unknown_rule")
#: priority of captures whose rule is no longer configured (they make room first)
ORPHAN_PRIORITY = -(1 << 62)


# ------------------------------------------------------------------ which rules
def effective_rules(config_rules: Sequence[CaptureRule], bundle_rules: Sequence[CaptureRule], *,
                    use_bundle_rules: bool, disk_budget_bytes: int) -> tuple[tuple[CaptureRule, ...], list[Clamp]]:
    """The rules that apply to one model: the config's, plus the bundle's when allowed (the
    config wins on a name clash), clamped to the disk budget (see ``clamp_rules``)."""
    names = {r.name for r in config_rules}
    rules = tuple(config_rules) + (tuple(r for r in bundle_rules if r.name not in names) if use_bundle_rules else ())
    return clamp_rules(rules, disk_budget_bytes=disk_budget_bytes)


# ------------------------------------------------------------------ which fire on a call
def class_scores(outputs: Mapping[str, np.ndarray], output: str) -> np.ndarray | None:
    """The class-score output as ``[samples, classes]`` (``output``, "" = the first output), or
    None when it is not a float tensor with a class axis."""
    if output:
        a = outputs.get(output)
    else:
        a = next(iter(outputs.values()), None)
    if a is None or a.ndim < 1 or a.shape[-1] < 2 or not np.issubdtype(a.dtype, np.floating):
        return None
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


def top1(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(top-1 probability, top-1 class)`` per row; rows that are not already probabilities
    (in [0, 1], summing to 1) go through a softmax first."""
    s = scores.astype(np.float64, copy=False)
    is_prob = bool(np.all(s >= 0) and np.all(s <= 1) and np.allclose(s.sum(axis=1), 1.0, atol=1e-3))
    if not is_prob:
        z = np.exp(s - s.max(axis=1, keepdims=True))
        s = z / z.sum(axis=1, keepdims=True)
    return s.max(axis=1), s.argmax(axis=1)


def fired(rules: Sequence[CaptureRule], outputs: Mapping[str, np.ndarray], expected: np.ndarray | None,
          draws: Sequence[float], *, class_output: str = "") -> list[tuple[CaptureRule, float | None]]:
    """The result rules that fire on one successful call, with their score (lowest top-1
    probability for low_confidence and disagreement). ``draws[i]`` is a uniform [0, 1) number
    for ``rules[i]`` (the rate's coin). ``class_output``: what a rule without an ``output`` reads
    (the bundle's class output; "": the first output)."""
    out = []
    for rule, draw in zip(rules, draws):
        if rule.trigger not in RESULT_TRIGGERS or draw >= rule.rate:
            continue
        if rule.trigger is Trigger.SAMPLE:
            out.append((rule, None))
            continue
        scores = class_scores(outputs, judged_output(rule, class_output))
        if scores is None:
            continue
        prob, cls = top1(scores)
        if rule.trigger is Trigger.LOW_CONFIDENCE and prob.min() < rule.threshold:
            out.append((rule, float(prob.min())))
        elif rule.trigger is Trigger.DISAGREEMENT and expected is not None:
            exp = np.asarray(expected).reshape(-1)
            if exp.size == cls.size and bool(np.any(exp != cls)):
                out.append((rule, float(prob.min())))
    return out


def attribute(fired_rules: Sequence[tuple[CaptureRule, float | None]]) -> tuple[CaptureRule, float | None]:
    """The rule a capture is counted against: the highest priority that fired (first on ties)."""
    best = fired_rules[0]
    for f in fired_rules[1:]:
        if f[0].priority > best[0].priority:
            best = f
    return best


# ------------------------------------------------------------------ what the store keeps
@dataclass(frozen=True)
class Stored:
    """What the budget rules need to know of one capture."""

    id: str
    rule: str
    bytes: int
    ts_ms: int


@dataclass(frozen=True)
class Admission:
    accept: bool
    evict: tuple[str, ...] = ()
    reason: str | None = None   # why it was refused: too_large, disk_budget


def admit(stored: Sequence[Stored], new: Stored, *, rules: Mapping[str, CaptureRule],
          disk_budget_bytes: int) -> Admission:
    """Whether ``new`` may be stored, and which captures to evict for it (module docstring)."""
    rule = rules.get(new.rule)
    if rule is None or new.bytes > rule.max_bytes:
        return Admission(False, reason="too_large" if rule is not None else "unknown_rule")
    keep = sorted(stored, key=lambda s: s.ts_ms)
    own = [s for s in keep if s.rule == new.rule]
    evict = _ring(own, len(own), sum(s.bytes for s in own), new, rule)
    gone = {s.id for s in evict}
    keep = [s for s in keep if s.id not in gone]
    total = sum(s.bytes for s in keep)
    ids = [s.id for s in evict]
    if total + new.bytes > disk_budget_bytes:
        prio = {s.id: priority(rules, s.rule) for s in keep}
        candidates = sorted((s for s in keep if prio[s.id] <= rule.priority), key=lambda s: (prio[s.id], s.ts_ms))
        for s in candidates:
            if total + new.bytes <= disk_budget_bytes:
                break
            ids.append(s.id)
            total -= s.bytes
        if total + new.bytes > disk_budget_bytes:
            return Admission(False, reason="disk_budget")
    return Admission(True, evict=tuple(ids))


def admit_in_rule(own: Iterable[Stored], new: Stored, *, rule: CaptureRule | None, own_count: int, own_bytes: int,
                  total_bytes: int, disk_budget_bytes: int) -> Admission | None:
    """:func:`admit` when the answer needs only ``new``'s own rule: ``own`` are that rule's
    captures oldest first (read lazily, only as far as the ring evicts), ``own_count`` /
    ``own_bytes`` their totals, ``total_bytes`` the store's. None when the disk budget would
    need captures of other rules: call :func:`admit` then. The store's fast path: it keeps
    these totals, so a capture costs no pass over everything stored."""
    if rule is None or new.bytes > rule.max_bytes:
        return Admission(False, reason="too_large" if rule is not None else "unknown_rule")
    evict = _ring(own, own_count, own_bytes, new, rule)
    if total_bytes - sum(s.bytes for s in evict) + new.bytes > disk_budget_bytes:
        return None
    return Admission(True, evict=tuple(s.id for s in evict))


def _ring(own: Iterable[Stored], count: int, used: int, new: Stored, rule: CaptureRule) -> list[Stored]:
    """Rule ``rule``'s oldest captures to evict so that ``new`` fits its count and bytes."""
    evict: list[Stored] = []
    for s in own:
        if count + 1 <= rule.max_count and used + new.bytes <= rule.max_bytes:
            break
        evict.append(s)
        count, used = count - 1, used - s.bytes
    return evict


def expired(stored: Sequence[Stored], *, rules: Mapping[str, CaptureRule], now_ms: int,
            default_retention_s: float) -> list[str]:
    """Captures older than their rule's retention (a rule no longer configured: the default)."""
    out = []
    for s in stored:
        r = rules.get(s.rule)
        keep_s = r.retention_s if r is not None else default_retention_s
        if now_ms - s.ts_ms > keep_s * 1000.0:
            out.append(s.id)
    return out


def priority(rules: Mapping[str, CaptureRule], name: str) -> int:
    """Rule ``name``'s priority (:data:`ORPHAN_PRIORITY` when it is no longer configured)."""
    r = rules.get(name)
    return r.priority if r is not None else ORPHAN_PRIORITY


def drift_contribution(values: np.ndarray, *, mean: float, std: float) -> float:
    """How far one call's tensor sits from the baseline: ``|mean - baseline mean| / baseline std``
    plus the relative change of its spread (0 for a call that looks like the baseline). Non-finite
    values count as far away."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return 0.0
    if not np.all(np.isfinite(x)):
        return math.inf
    s = std if std > 1e-12 else 1e-12
    return float(abs(x.mean() - mean) / s + abs(x.std() - std) / s)
