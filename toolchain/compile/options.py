"""Typed, frozen options of one ``edgeship compile`` run (what the CLI parses into)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from runtime.spec import Engine
from toolchain.compile.context import QuantOptions
from toolchain.compile.verify import Precision, UserGates
from toolchain.errors import ToolchainError

ALL_TARGETS: tuple[Engine, ...] = (Engine.ONNXRUNTIME, Engine.OPENVINO, Engine.TFLITE)
ALL_PRECISIONS: tuple[Precision, ...] = tuple(Precision)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class UsageError(ToolchainError):
    """A malformed option value (exit code 2)."""


@dataclass(frozen=True)
class CompileOptions:
    source: str
    name: str | None = None
    out_dir: Path = Path("build")
    targets: tuple[Engine, ...] = ALL_TARGETS
    precisions: tuple[Precision, ...] = ALL_PRECISIONS
    calibration: str | None = None
    validation: str | None = None
    labels: str | None = None
    random_calibration: bool = False
    quant: QuantOptions = field(default_factory=QuantOptions)
    gates: UserGates = field(default_factory=UserGates)
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    factory_kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_validation_samples: int | None = None
    external_data: bool | None = None  # None: only when weights are large


def parse_targets(text: str) -> tuple[Engine, ...]:
    out = []
    for t in _split(text):
        try:
            out.append(Engine(t))
        except ValueError:
            raise UsageError(f"unknown target {t!r}; choose from {[e.value for e in Engine]}") from None
    return tuple(dict.fromkeys(out))


def parse_precisions(text: str) -> tuple[Precision, ...]:
    out = []
    for p in _split(text):
        try:
            out.append(Precision(p))
        except ValueError:
            raise UsageError(f"unknown precision {p!r}; choose from {[x.value for x in Precision]}") from None
    return tuple(dict.fromkeys(out))


def parse_dynamic_axes(items: list[str] | None) -> dict[str, dict[int, str]]:
    """``["input:axis:name", ...]`` -> ``{input: {axis: name}}``."""
    out: dict[str, dict[int, str]] = {}
    for item in items or []:
        parts = item.split(":")
        if len(parts) != 3 or not parts[1].lstrip("-").isdigit() or not parts[0] or not parts[2]:
            raise UsageError(f"--dynamic-axis {item!r}: expected input:axis:name, e.g. input_ids:1:seq")
        out.setdefault(parts[0], {})[int(parts[1])] = parts[2]
    return out


def _split(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError("empty list")
    return items
