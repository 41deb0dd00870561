"""Tensor and engine descriptions shared by every backend (pure values, no engine imports)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Union


Dim = Union[int, str, None]  # a fixed size, a symbolic name ("batch", "seq"), or unknown


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
        return all(not isinstance(d, int) or d < 0 or d == s for d, s in zip(self.shape, shape))

    def concrete_shape(self, *, batch: int = 1, defaults: dict[str, int] | None = None) -> tuple[int, ...]:
        """A concrete shape: the first symbolic dim becomes ``batch``, others ``defaults`` or 1."""
        out = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int) and d >= 0:
                out.append(d)
            elif i == 0:
                out.append(batch)
            else:
                out.append((defaults or {}).get(str(d), 1))
        return tuple(out)


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
