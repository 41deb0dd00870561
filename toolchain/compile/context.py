"""What every converter step receives, and the converter interface.

The pipeline (``toolchain.compile.pipeline``) loads the source, exports the reference ONNX,
loads calibration/validation data, then calls one converter per (engine, precision) with a
:class:`BuildContext`. A converter writes its files into ``out_dir`` and returns the main model
file; it raises :class:`toolchain.errors.ConversionError` (naming the op/target) on failure,
which marks that artifact failed while the others still build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from runtime.spec import Engine, TensorSpec

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class SampleSet:
    """In-memory samples: one ``Feeds`` dict per sample (batch 1), optional int labels."""

    samples: Sequence[Feeds]
    labels: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    random: bool = False

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Feeds]:
        return iter(self.samples)


@dataclass(frozen=True)
class QuantOptions:
    """Quantization recipe (typed; round-trips to the manifest's ``recipe``)."""

    calibration_method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    calibration_samples: int = 128
    #: accuracy-aware int8 (toolchain.compile.fallback): keep the fewest culprit layers in float
    #: when an int8 artifact misses its fidelity budget (``--no-fallback`` turns it off)
    fallback: bool = True


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
    # what the artifact must reach (a toolchain.compile.fallback.FidelityBudget), set per artifact
    budget: Any | None = None
    progress: Callable[[str], None] | None = None  # converters' progress lines on long steps


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
