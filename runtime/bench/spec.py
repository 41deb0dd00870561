"""What one benchmark cell is: a model file on an engine under one configuration (pure values).

A cell's scenario follows from its configuration and is never mixed: batch 1 with one
request in flight is ``single_stream`` (the headline latency); a batch above 1 or more than
one request in flight is ``throughput``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import CellSpecError


class Scenario(str, enum.Enum):
    SINGLE_STREAM = "single_stream"
    THROUGHPUT = "throughput"


def scenario_for(*, batch: int, streams: int) -> Scenario:
    return Scenario.SINGLE_STREAM if batch == 1 and streams == 1 else Scenario.THROUGHPUT


def check_count(name: str, value: object) -> int:
    """``value`` as a count >= 1 (threads, batch, streams, input pool): the one check of them.

    Raises:
        CellSpecError: not an integer, a bool, or below 1.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CellSpecError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class RunLength:
    """Warm-up and measurement length. Each phase ends only when BOTH its minima are met.

    ``max_duration_s`` caps a cell whose model is so slow that ``min_iters`` would take
    longer; the result then says ``length_met: false``.
    """

    warmup_min_iters: int
    warmup_min_s: float
    min_iters: int
    min_duration_s: float
    max_duration_s: float
    cooldown_s: float = 0.0  # idle gap before the cell starts (thermal fairness)

    def __post_init__(self) -> None:
        if self.warmup_min_iters < 0 or self.min_iters < 1:
            raise CellSpecError("warm-up iterations must be >= 0 and measured iterations >= 1")
        if min(self.warmup_min_s, self.min_duration_s, self.cooldown_s) < 0:
            raise CellSpecError("durations must be >= 0 seconds")
        if self.max_duration_s < self.min_duration_s:
            raise CellSpecError("max_duration_s must be >= min_duration_s")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunLength":
        _reject_unknown(cls, d)
        return cls(**d)


class Preset(str, enum.Enum):
    """Run-length presets (see docs/bench.md): quick for CI, standard, long (MLPerf-like 600 s)."""

    QUICK = "quick"
    STANDARD = "standard"
    LONG = "long"

    def run_length(self) -> RunLength:
        return _PRESETS[self]

    @property
    def repeats(self) -> int:
        """Independent trials (fresh processes) per configuration."""
        return {Preset.QUICK: 1, Preset.STANDARD: 3, Preset.LONG: 5}[self]


_PRESETS = {
    Preset.QUICK: RunLength(warmup_min_iters=10, warmup_min_s=1.0, min_iters=200,
                            min_duration_s=10.0, max_duration_s=60.0, cooldown_s=0.0),
    Preset.STANDARD: RunLength(warmup_min_iters=20, warmup_min_s=2.0, min_iters=1000,
                               min_duration_s=60.0, max_duration_s=600.0, cooldown_s=2.0),
    Preset.LONG: RunLength(warmup_min_iters=50, warmup_min_s=5.0, min_iters=5000,
                           min_duration_s=600.0, max_duration_s=3600.0, cooldown_s=5.0),
}


@dataclass(frozen=True)
class CellSpec:
    """Everything the cell process needs; round-trips through JSON (unknown keys rejected)."""

    cell_id: str
    model_path: str
    engine: str
    threads: int
    batch: int
    run_length: RunLength
    streams: int = 1
    device: str = "CPU"
    precision_hint: str | None = None
    cpu_affinity: tuple[int, ...] | None = None
    inputs_npz: str | None = None  # validation inputs by input name; None -> seeded random
    input_seed: int = 0
    input_pool: int = 16  # distinct preloaded feeds, cycled in a fixed order
    samples_path: str | None = None  # where the cell writes raw samples (.npy, float64 seconds)
    #: batch axis per input as the build's manifest declares it (None: the input has none);
    #: inputs not named here are found from their dims (runtime.spec.find_batch_axis)
    batch_axes: dict[str, int | None] | None = None
    #: a full example shape per input, giving sizes to dynamic dims where inputs are generated
    input_shapes: dict[str, tuple[int, ...]] | None = None
    trial: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # opaque to the cell, echoed back

    def __post_init__(self) -> None:
        for name in ("threads", "batch", "streams", "input_pool"):
            check_count(name, getattr(self, name))
        if self.cpu_affinity is not None and not self.cpu_affinity:
            raise CellSpecError("cpu_affinity, when given, must name at least one CPU")

    @property
    def scenario(self) -> Scenario:
        return scenario_for(batch=self.batch, streams=self.streams)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_length"] = self.run_length.to_json()
        d["cpu_affinity"] = list(self.cpu_affinity) if self.cpu_affinity is not None else None
        if self.input_shapes is not None:
            d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CellSpec":
        """Raises: CellSpecError (unknown keys, bad values)."""
        _reject_unknown(cls, d)
        d = dict(d)
        d["run_length"] = RunLength.from_json(d["run_length"])
        if d.get("cpu_affinity") is not None:
            d["cpu_affinity"] = tuple(int(c) for c in d["cpu_affinity"])
        if d.get("input_shapes") is not None:
            d["input_shapes"] = {str(k): tuple(int(x) for x in v) for k, v in d["input_shapes"].items()}
        try:
            return cls(**d)
        except TypeError as e:
            raise CellSpecError(f"bad cell spec: {e}") from e


def _reject_unknown(cls, d: dict[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise CellSpecError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
