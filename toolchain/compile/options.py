"""Typed, frozen options of one ``edgeship compile`` run (what the CLI parses into)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from runtime.spec import Engine
from toolchain.compile.context import QuantOptions
from toolchain.compile.fidelity import Task
from toolchain.compile.verify import Precision, UserGates
from toolchain.errors import BadInputError

ALL_TARGETS: tuple[Engine, ...] = (Engine.ONNXRUNTIME, Engine.OPENVINO, Engine.TFLITE)
ALL_PRECISIONS: tuple[Precision, ...] = tuple(Precision)


class UsageError(BadInputError):
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
    task: Task | None = None  # None: the factory's metadata, else inferred from the outputs
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)  # input -> axis (None: no batch axis)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # example shape per input
    allow_static: tuple[str, ...] = ()  # dims (name or input:axis) that may be built static


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


def parse_batch_axes(items: list[str] | None) -> dict[str, int | None]:
    """``["state:1", "sr:none"]`` -> ``{"state": 1, "sr": None}``."""
    out: dict[str, int | None] = {}
    for item in items or []:
        name, sep, axis = item.rpartition(":")
        if not sep or not name or not (axis.isdigit() or axis.lower() == "none"):
            raise UsageError(f"--batch-axis {item!r}: expected input:axis or input:none, e.g. state:1")
        out[name] = None if axis.lower() == "none" else int(axis)
    return out


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,48,192", "sr="]`` -> ``{"x": (1, 3, 48, 192), "sr": ()}``."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        parts = [p.strip() for p in dims.replace("x", ",").split(",") if p.strip()]
        if not sep or not name or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise UsageError(f"--input-shape {item!r}: expected input=d0,d1,... with sizes >= 1, e.g. x=1,3,48,192")
        out[name.strip()] = tuple(int(p) for p in parts)
    return out


def parse_task(text: str | None) -> Task | None:
    if text is None:
        return None
    try:
        return Task.parse(text)
    except ValueError as e:
        raise UsageError(f"--task: {e}") from None


def _split(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError("empty list")
    return items
