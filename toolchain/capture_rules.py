"""`edgeship package --capture-rules FILE`: the capture rules a release ships with.

``FILE`` is TOML with one ``[[rules]]`` table per rule, the keys of the agent's
``[[capture.rules]]`` (docs/capture.md; a key left out takes the same default), or JSON
(``{"rules": [{...}]}``, by its ``.json`` suffix). Everything is checked before anything is
written: an unknown key, a wrong type or value, a duplicate name, and a
rule whose trigger reads a class output (``low_confidence``, ``disagreement``) on a model
without a float class-score output (or naming an ``output`` the model does not have; a rule
without an ``output`` is checked against the bundle's class output, once the run decided it, and
refused when none was decided: :func:`settle_class_rules`). Each refusal names the file, the
rule and the key (exit code 2).

The rules land in ``model.json`` ``capture`` (bundle schema 3), covered by the bundle's
sha256 and so by its signature like the rest of model.json. They apply only on devices whose
``agent.toml`` turns capture on, with ``use_bundle_rules`` (the default); a rule of the same
name in ``agent.toml`` wins.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from runtime.contracts.capture.rules import (
    CLASS_TRIGGERS, CapturePolicy, CaptureRule, class_output_problem, describe_outputs, duplicate_names,
)
from runtime.contracts.errors import BundleError
from runtime.spec import TensorSpec

from .console import human_bytes
from .errors import BadInputError


class CaptureRulesError(BadInputError):
    """The --capture-rules file cannot be read or holds a bad rule; names the file, rule and key (exit 2)."""


def load_rules_file(path: str | os.PathLike) -> CapturePolicy:
    """Read and check a capture-rules file (module docstring).

    Raises:
        CaptureRulesError: unreadable, not TOML/JSON, no rules, a bad key or value, a duplicate name.
    """
    p = Path(path)
    kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise CaptureRulesError(f"{p}: cannot read the capture rules: {e.strerror or e}") from None
    try:
        data = json.loads(raw) if kind == "JSON" else tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise CaptureRulesError(f"{p}: not valid {kind}: {e}") from None
    if not isinstance(data, dict) or set(data) - {"rules"}:
        extra = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CaptureRulesError(f"{p}: unexpected {extra}; the file holds only [[rules]] tables (JSON: "
                                f"{{\"rules\": [...]}}), each with the keys of agent.toml's [[capture.rules]]")
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise CaptureRulesError(f"{p}: no [[rules]] tables; leave --capture-rules out for a release without "
                                f"capture rules")
    rules = []
    for i, d in enumerate(rules_raw):
        name = d.get("name") if isinstance(d, dict) else None
        label = f"rule {name!r}" if isinstance(name, str) and name else f"rule #{i + 1} (no name)"
        try:
            rules.append(CaptureRule.from_table(d, where=f"rules[{i}]"))
        except BundleError as e:
            raise CaptureRulesError(f"{p}: {label}: {e}") from None
    dup = duplicate_names(tuple(rules))
    if dup:
        raise CaptureRulesError(f"{p}: duplicate rule name(s) {dup}; each rule needs its own name")
    return CapturePolicy(rules=tuple(rules))


def check_outputs(policy: CapturePolicy, outputs: Sequence[TensorSpec], *, where: str, default: str = "") -> None:
    """Refuse a rule that needs a class-score output the model does not have (names the outputs;
    ``default``: the bundle's class output, read by a rule without an ``output``).

    Raises:
        CaptureRulesError: naming ``where`` (the file), the rule and the outputs that exist.
    """
    for rule in policy.rules:
        problem = class_output_problem(rule, outputs, default)
        if problem:
            raise CaptureRulesError(f"{where}: {problem}")


def settle_class_rules(policy: CapturePolicy, outputs: Sequence[TensorSpec], *, where: str,
                       class_output: str | None, carried: str) -> CapturePolicy:
    """The rules as the bundle ships them, checked against the model's outputs.

    A ``low_confidence``/``disagreement`` rule without an ``output`` judges ``class_output``,
    the class output decided at package time (None: none). ``carried``: the one the drift
    baseline's class mix holds (what agents read for such a rule, ``BundleInfo.class_output``);
    when the bundle has no baseline to carry it, it is written into the rule, so that no agent
    falls back to the first output. With no class output decided the rule is refused.

    Raises:
        CaptureRulesError: naming ``where``, the rule, the first output, the outputs and
            ``--class-output``.
    """
    rules = []
    for r in policy.rules:
        if r.trigger in CLASS_TRIGGERS and not r.output:
            if not class_output:
                first = f"{outputs[0].name!r} ({outputs[0].describe()})" if outputs else "none"
                raise CaptureRulesError(
                    f"{where}: capture rule {r.name!r} ({r.trigger.value}) has no output and the model has no "
                    f"class output: no output the build verified as a classifier's is a float [samples, classes] "
                    f"tensor, and the first output {first} is not taken in its place (outputs: "
                    f"{describe_outputs(outputs)}); set output = \"NAME\" in the rule, or pass --class-output NAME")
            if class_output != carried:
                r = replace(r, output=class_output)
        rules.append(r)
    settled = CapturePolicy(rules=tuple(rules))
    check_outputs(settled, outputs, where=where, default=carried)
    return settled


def describe_rule(r: CaptureRule, class_output: str = "") -> str:
    """One line per rule: ``unsure  low_confidence < 0.6 on 'y', 100% of calls, <= 1000 captures / 64 MiB, ...``
    (``class_output``: the bundle's, named for a class rule left without an output)."""
    what = {"low_confidence": f"top-1 < {r.threshold:g}", "drift": f"{r.drift_samples} calls per alarm"}.get(
        r.trigger.value, "")
    if r.trigger in CLASS_TRIGGERS and (r.output or class_output):
        on = f"on {r.output!r}" if r.output else f"on {class_output!r} (the bundle's class output)"
        what = (what + " " if what else "") + on
    return (f"{r.name}: {r.trigger.value}{' ' + what if what else ''}, rate {r.rate:g}, <= {r.max_count} captures / "
            f"{human_bytes(r.max_bytes)}, kept {_duration(r.retention_s)}, priority {r.priority}")


def _duration(s: float) -> str:
    for unit, k in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= k:
            return f"{s / k:g} {unit}"
    return f"{s:g} s"
