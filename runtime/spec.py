"""Tensor and engine descriptions shared by every backend (pure values, no engine imports)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Mapping, Union


Dim = Union[int, str, None]  # a fixed size, a symbolic name ("batch", "seq"), or unknown

#: dim names that mean "the batch" (whole name, case-insensitive), or any name containing "batch"
_BATCH_NAME = re.compile(r"^(n|b|bs|nb|batch|batches|batch_?size|num_?batch(es)?)$|batch", re.I)
#: placeholders exporters write for a dim they know nothing about: each one is its own dim
_PLACEHOLDER = re.compile(r"^(\?|-1|unk__\d+|dim_?\d+|.*DynamicDimension\.\d+|[a-z]+_dim_\d+)$", re.I)


def contiguous(a: Any) -> Any:
    """``a`` as a C-contiguous numpy array of the same rank (``np.ascontiguousarray`` turns a
    scalar into shape ``(1,)``, which a rank-0 input refuses)."""
    import numpy as np

    a = np.asarray(a)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(a.shape)


def is_dynamic(d: Dim) -> bool:
    """True for a symbolic or unknown dim (a name, ``None``, ``'?'``, or a negative size)."""
    return not (isinstance(d, int) and d >= 0)


def tie_name(d: Dim) -> str | None:
    """The name that ties this dim to same-named dims of other tensors, or None when it is
    independent: fixed sizes, unknown dims and placeholders (``'?'``, ``''``, ``-1``, ``unk__3``)
    each stand for their own size, however many tensors carry the same placeholder.
    """
    if not isinstance(d, str) or not d.strip() or d.strip() == "?":
        return None
    return d


def is_placeholder(d: Dim) -> bool:
    """An unnamed dynamic dim: None, negative, ``'?'``, ``''`` or an exporter's generated name."""
    if d is None or (isinstance(d, int) and d < 0):
        return True
    return isinstance(d, str) and (not d.strip() or bool(_PLACEHOLDER.match(d.strip())))


def find_batch_axis(shape: tuple[Dim, ...]) -> int | None:
    """The batch axis of an input, from its dims alone (a declared axis overrides this).

    1. the axis whose dim name looks like a batch (``batch``, ``batch_size``, ``N``, ...);
    2. else axis 0 when it is an unnamed dynamic dim (``None``, ``'?'``, ``-1``, an exporter
       placeholder) or a fixed size of 1;
    3. else None: the input has no batch axis (a scalar, ``state [2, ?, 128]``, a dim named
       ``seq`` in front) and every sample carries the whole tensor.
    """
    for axis, d in enumerate(shape):
        if isinstance(d, str) and _BATCH_NAME.search(d.strip()):
            return axis
    if not shape:
        return None
    d0 = shape[0]
    if is_placeholder(d0) or d0 == 1:
        return 0
    return None


def batch_axes(specs, declared: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
    """``{input name: batch axis or None}``: the declared axis where given, else :func:`find_batch_axis`."""
    declared = declared or {}
    return {s.name: declared[s.name] if s.name in declared else find_batch_axis(tuple(s.shape)) for s in specs}


class Engine(str, enum.Enum):
    """Inference engines edgeship can run. Values round-trip through CLI and JSON."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TFLITE = "tflite"


#: pip extra that provides each engine
ENGINE_EXTRA = {Engine.ONNXRUNTIME: "agent", Engine.OPENVINO: "openvino", Engine.TFLITE: "tflite"}


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype name and shape of one model input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(name=d["name"], dtype=str(d["dtype"]), shape=tuple(d["shape"]))

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """True when a concrete ``shape`` fits this spec (symbolic dims match any size)."""
        if len(shape) != len(self.shape):
            return False
        return all(is_dynamic(d) or d == s for d, s in zip(self.shape, shape))

    def describe(self) -> str:
        """``float32[2, ?, 128]``: unknown dims as ``?``, named dims by name."""
        dims = ", ".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def deploy_precision_hint(engine: Engine | str, precision: str) -> str | None:
    """The precision hint an artifact is verified, benchmarked and served with.

    One answer for every consumer (compile verification, bench's default mode, the agent,
    the update gate), so a model runs on the device exactly as it was verified. OpenVINO on
    CPUs with AMX/AVX512-BF16 executes FP32 (and FP16-compressed) IR in bf16 unless told f32;
    bf16 changes numerics, so float artifacts are pinned to f32. Quantized artifacts and the
    other engines execute their graph's own types: no hint.
    """
    if Engine(engine) is Engine.OPENVINO and precision in ("fp32", "fp16"):
        return "f32"
    return None


def expected_execution(engine: Engine | str, precision: str) -> frozenset[str]:
    """Executed precisions that are faithful to an artifact of ``precision`` on ``engine``.

    An OpenVINO fp16 IR stores fp16 weights; CPUs decompress them and compute in f32 under
    the deploy hint (GPUs compute in fp16), so both are faithful. Anything else is a fallback.
    """
    if Engine(engine) is Engine.OPENVINO and precision == "fp16":
        return frozenset({"fp16", "fp32"})
    if precision.startswith("int8"):
        return frozenset({"int8"})
    return frozenset({precision})
