"""The one interface over every inference engine.

A backend subclasses :class:`Session` and fills in ``_open`` and ``_run`` (and, where the
engine's tensors differ from what callers see, ``_run_raw``). The public methods, input
validation and error wrapping live here once.

Invariants:
- ``inputs``/``outputs`` describe what callers pass and get (float for a full-int8
  TFLite model: the backend quantizes and dequantizes); ``raw_inputs``/``raw_outputs``
  describe the engine's own tensors.
- ``executed_precision`` is what the engine really runs (e.g. ``bf16`` for an FP32
  OpenVINO IR on an AMX CPU without an f32 hint), not what was asked for.
"""

from __future__ import annotations

import abc
import functools
import os
import time
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from .errors import EdgeshipRuntimeError, InferenceError, InputMismatchError, ModelLoadError
from .spec import Engine, TensorSpec, contiguous


class Session(abc.ABC):
    """An opened model, ready to run. Create with :func:`runtime.open_model`."""

    engine: ClassVar[Engine]

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        device: str = "CPU",
        precision_hint: str | None = None,
    ) -> None:
        """Open ``path``.

        Raises:
            ValueError: ``threads`` below 1, or an unknown ``precision_hint``.
            ModelLoadError: the file is missing or the engine refused it.
        """
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.path = Path(path)
        self.threads = threads
        self.device = device
        self.precision_hint = normalize_precision_hint(precision_hint)
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.raw_inputs: list[TensorSpec] = []
        self.raw_outputs: list[TensorSpec] = []
        self.executed_precision: str = "unknown"
        self._closed = False
        if not self.path.exists():
            raise ModelLoadError(f"{self.path}: model file not found")
        t0 = time.perf_counter()
        try:
            self._open()
        except EdgeshipRuntimeError:
            raise
        except Exception as e:  # engine-specific parse/compile errors
            raise ModelLoadError(f"{self.path}: {self.engine.value} could not load the model: {e}") from e
        self.load_time_s = time.perf_counter() - t0
        if not self.raw_inputs:
            self.raw_inputs = list(self.inputs)
        if not self.raw_outputs:
            self.raw_outputs = list(self.outputs)

    # -- what backends fill in -------------------------------------------------
    @abc.abstractmethod
    def _open(self) -> None:
        """Load/compile the model; set inputs, outputs, executed_precision."""

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on validated caller-level feeds; return caller-level outputs by name."""

    def _run_raw(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on the engine's own tensors. Same as ``_run`` unless the backend converts."""
        return self._run(feeds)

    def _close(self) -> None:
        """Drop engine objects (backends that hold more than a Python reference)."""

    def close(self) -> None:
        """Release engine resources. Idempotent; a closed session refuses to run."""
        self._closed = True
        self._close()

    # -- public ------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on caller-level (float for quantized models) arrays.

        Raises:
            InputMismatchError: a missing/unknown input, or a wrong dtype or shape.
            InferenceError: the engine failed on valid inputs, or the session is closed.
        """
        checked = self._check(feeds, self.inputs)
        return self._call(self._run, checked)

    def run_raw(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on the engine's own tensors (e.g. int8 for a full-int8 TFLite model).

        Raises:
            InputMismatchError, InferenceError: as :meth:`run`, checked against ``raw_inputs``.
        """
        checked = self._check(feeds, self.raw_inputs)
        return self._call(self._run_raw, checked)

    def _call(self, fn, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise InferenceError(f"{self.path.name}: the {self.engine.value} session is closed")
        try:
            return fn(feeds)
        except EdgeshipRuntimeError:
            raise
        except Exception as e:
            raise InferenceError(f"{self.path.name}: {self.engine.value} inference failed: {e}") from e

    def _check(self, feeds: Mapping[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
        names = {s.name for s in specs}
        missing = [n for n in names if n not in feeds]
        unknown = [n for n in feeds if n not in names]
        if missing or unknown:
            raise InputMismatchError(
                f"{self.path.name}: expected inputs {sorted(names)}"
                + (f"; missing {sorted(missing)}" if missing else "")
                + (f"; unknown {sorted(unknown)}" if unknown else "")
            )
        out: dict[str, np.ndarray] = {}
        for s in specs:
            a = np.asarray(feeds[s.name])
            if a.dtype != np.dtype(s.dtype):
                raise InputMismatchError(
                    f"{self.path.name}: input {s.name!r} must be {s.dtype}, got {a.dtype}"
                )
            if not s.accepts_shape(a.shape):
                raise InputMismatchError(
                    f"{self.path.name}: input {s.name!r} has shape {list(a.shape)}, "
                    f"model expects {list(s.shape)}"
                )
            out[s.name] = contiguous(a)
        return out

    def describe(self) -> dict:
        """JSON-ready facts about this session (for manifests, bench results, status)."""
        return {
            "engine": self.engine.value,
            "engine_version": engine_version(self.engine),
            "device": self.device,
            "threads": self.threads,
            "executed_precision": self.executed_precision,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
        }

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: accepted precision hints -> canonical name (what OpenVINO calls them)
PRECISION_HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def normalize_precision_hint(hint: str | None) -> str | None:
    """``"fp32"``/``"f32"`` -> ``"f32"`` etc.; None stays None.

    Raises:
        ValueError: a hint that no engine understands.
    """
    if hint is None:
        return None
    canonical = PRECISION_HINTS.get(str(hint).lower())
    if canonical is None:
        raise ValueError(f"unknown precision_hint {hint!r}; choose one of {sorted(PRECISION_HINTS)}")
    return canonical


@functools.cache
def engine_version(engine: Engine) -> str | None:
    """Installed version of an engine's package, without importing it.

    Cached for the life of the process (a metadata scan costs milliseconds, and status and
    every telemetry tick ask): a package upgraded underneath a running process does not
    change the engine it has loaded.
    """
    from importlib.metadata import PackageNotFoundError, version

    candidates = {
        Engine.ONNXRUNTIME: ["onnxruntime"],
        Engine.OPENVINO: ["openvino"],
        Engine.TFLITE: ["ai-edge-litert", "tflite-runtime"],
    }[engine]
    for dist in candidates:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None
