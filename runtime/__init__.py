"""edgeship runtime: one small interface over ONNX Runtime, OpenVINO and TFLite/LiteRT.

Importing this package imports no engine; a backend is imported when a model is opened.
The shared base of host and device also holds ``runtime.contracts`` (every format that
crosses between them), ``runtime.bench`` (the measuring loop), and small shared helpers
(``fsutil``, ``percentile``, ``cliutil``, ``errors``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .backends import available_engines, is_available, session_class
from .base import Session, engine_version
from .errors import (
    EdgeshipRuntimeError,
    EngineNotInstalledError,
    InferenceError,
    InputMismatchError,
    ModelLoadError,
    UnknownEngineError,
)
from .spec import Engine, TensorSpec

__all__ = [
    "Engine", "TensorSpec", "Session", "open_model", "engine_for_file", "available_engines",
    "is_available", "engine_version", "EdgeshipRuntimeError", "EngineNotInstalledError",
    "InferenceError", "InputMismatchError", "ModelLoadError", "UnknownEngineError",
]

_SUFFIX_ENGINE = {".onnx": Engine.ONNXRUNTIME, ".xml": Engine.OPENVINO, ".tflite": Engine.TFLITE}


def engine_for_file(path: str | os.PathLike) -> Engine:
    """The default engine for a model file, by its suffix.

    Raises:
        UnknownEngineError: the suffix is not .onnx, .xml or .tflite.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_ENGINE:
        raise UnknownEngineError(
            f"{path}: cannot tell the engine from suffix {suffix!r}; expected one of "
            f"{sorted(_SUFFIX_ENGINE)} or pass engine="
        )
    return _SUFFIX_ENGINE[suffix]


def open_model(
    path: str | os.PathLike,
    *,
    engine: Engine | str | None = None,
    threads: int | None = None,
    device: str = "CPU",
    precision_hint: str | None = None,
) -> Session:
    """Open a model file on an engine and return a ready :class:`Session`.

    ``engine`` defaults by suffix (.onnx -> onnxruntime, .xml -> openvino, .tflite -> tflite);
    OpenVINO also opens .onnx when asked. ``precision_hint`` (e.g. ``"f32"``) is passed to
    engines that choose their own execution precision (OpenVINO); accepted: f32/fp32,
    bf16, f16/fp16. Engines that execute the graph's own types (ONNX Runtime, TFLite)
    ignore it.

    Raises:
        UnknownEngineError, EngineNotInstalledError, ModelLoadError,
        ValueError (threads < 1 or an unknown precision_hint).
    """
    if engine is None:
        eng = engine_for_file(path)
    else:
        names = {e.value: e for e in Engine}
        key = engine.value if isinstance(engine, Engine) else str(engine).lower()
        if key not in names:
            raise UnknownEngineError(f"unknown engine {engine!r}; choose one of {sorted(names)}")
        eng = names[key]
    cls = session_class(eng)
    return cls(path, threads=threads, device=device, precision_hint=precision_hint)
