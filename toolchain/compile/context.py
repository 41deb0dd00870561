"""What every converter step receives, and the converter interface.

The pipeline (``toolchain.compile.pipeline``) loads the source, exports the reference ONNX,
loads calibration/validation data, then calls one converter per (engine, precision) with a
:class:`BuildContext`. A converter writes its files into ``out_dir`` and returns the main model
file; it raises :class:`toolchain.errors.ConversionError` (naming the op/target) on failure,
which marks that artifact failed while the others still build.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from runtime.spec import Engine, TensorSpec
from toolchain.compile.samples import Layout

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class SampleSet:
    """In-memory samples: one ``Feeds`` dict per sample (model-ready: the batch axis, where
    the input has one, of size 1), optional int labels, and the layout that stores them."""

    samples: Sequence[Feeds]
    labels: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    random: bool = False
    layout: Layout | None = None  # None: every input batched on axis 0

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Feeds]:
        return iter(self.samples)


class CalibrationMethod(str, enum.Enum):
    """How int8 activation ranges are estimated. Values round-trip through CLI and JSON; a
    member formats and compares as its value, so tables keyed by ``"minmax"`` take it."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    __str__ = str.__str__
    __format__ = str.__format__

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def parse(cls, value: "str | CalibrationMethod") -> "CalibrationMethod":
        """Raises ValueError naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown calibration method {value!r}; choose one of {[m.value for m in cls]}") from None


@dataclass(frozen=True)
class QuantOptions:
    """Quantization recipe (typed; round-trips to the manifest's ``recipe``).

    ``calibration_method`` is parsed once here (a string is accepted and converted).

    Raises:
        ValueError: an unknown calibration method, or ``calibration_samples`` below 1.
    """

    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    per_channel: bool = True
    calibration_samples: int = 128
    #: accuracy-aware int8 (toolchain.compile.fallback): keep the fewest culprit layers in float
    #: when an int8 artifact misses its fidelity budget (``--no-fallback`` turns it off)
    fallback: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration_method", CalibrationMethod.parse(self.calibration_method))
        if isinstance(self.calibration_samples, bool) or int(self.calibration_samples) < 1:
            raise ValueError(f"calibration_samples must be >= 1, got {self.calibration_samples!r}")


@dataclass(frozen=True)
class BuildContext:
    model_name: str
    reference_onnx: Path  # fp32 ONNX exported from the source (its .data travels beside it)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    calibration: SampleSet | None
    quant: QuantOptions = field(default_factory=QuantOptions)
    # The PyTorch model and one example input tuple, when the source was PyTorch
    # (None for .onnx sources: converters that need torch must then refuse clearly).
    torch_module: Any | None = None
    example_inputs: tuple[Any, ...] | None = None
    dynamic_dims: dict[str, dict[int, str]] = field(default_factory=dict)  # input -> {axis: name}
    work_dir: Path | None = None  # scratch space owned by the pipeline
    layout: Layout | None = None  # batch axis of each input (None: axis 0 for every input)
    # what the artifact must reach (a toolchain.compile.fallback.FidelityBudget), set per artifact
    budget: Any | None = None
    progress: Callable[[str], None] | None = None  # converters' progress lines on long steps
    #: results converters share across the artifacts of one build (``replace`` keeps the same
    #: dict), each under a key of its own: ORT's int8 graph that ``int8`` and ``int8-static``
    #: (or ``int8-dynamic``) both resolve to is built once (:mod:`toolchain.compile.ort`)
    shared: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


class Converter(Protocol):
    """One engine's variants. ``build`` returns the main model file inside ``out_dir``.

    Raises:
        toolchain.errors.ConversionError: the target cannot take this model (names op/target).
        runtime.EngineNotInstalledError / toolchain.errors.MissingExtraError: package missing.
    """

    engine: Engine
    precisions: tuple[str, ...]

    def build(self, ctx: BuildContext, *, precision: str, out_dir: Path) -> Path: ...


ConverterFactory = Callable[[], Converter]
