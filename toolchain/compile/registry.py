"""Converter table: engine -> "module:Class", the precisions it builds, the packages it needs.

Listing targets and precisions imports nothing heavy. :func:`load_converter` checks the
packages with ``importlib.util.find_spec`` first, so a missing engine names its pip extra
instead of failing deep inside an import; a converter module that is absent from this
installation is reported as a failed artifact, never a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from runtime.spec import Engine
from toolchain.compile.context import Converter
from toolchain.compile.verify import Precision
from toolchain.errors import ConversionError, MissingExtraError


@dataclass(frozen=True)
class ConverterEntry:
    target: str  # "module:Class"
    precisions: tuple[Precision, ...]
    packages: tuple[tuple[str, str], ...]  # (import name, pip extra providing it)


REGISTRY: dict[Engine, ConverterEntry] = {
    Engine.ONNXRUNTIME: ConverterEntry(
        "toolchain.compile.ort:OrtConverter",
        (Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_STATIC, Precision.INT8_DYNAMIC),
        (("onnx", "toolchain"), ("onnxruntime", "agent")),
    ),
    Engine.OPENVINO: ConverterEntry(
        "toolchain.compile.openvino:OpenVinoConverter",
        (Precision.FP32, Precision.FP16, Precision.INT8),
        (("openvino", "openvino"),),
    ),
    Engine.TFLITE: ConverterEntry(
        "toolchain.compile.tflite:TfliteConverter",
        (Precision.FP32, Precision.INT8),
        (("litert_torch", "toolchain"), ("ai_edge_litert", "tflite")),
    ),
}

#: what a requested precision means on each engine ("int8" is each engine's default int8: on ORT
#: the recipe that fits the graph, static QDQ or dynamic; "int8-static" is OpenVINO's and
#: TFLite's only int8)
_ALIASES: dict[Engine, dict[Precision, Precision]] = {
    Engine.ONNXRUNTIME: {},
    Engine.OPENVINO: {Precision.INT8_STATIC: Precision.INT8},
    Engine.TFLITE: {Precision.INT8_STATIC: Precision.INT8},
}


def resolve_precision(engine: Engine, requested: Precision) -> Precision | None:
    """The engine's variant for a requested precision, or None when it has none."""
    p = _ALIASES[engine].get(requested, requested)
    return p if p in REGISTRY[engine].precisions else None


def missing_package(engine: Engine) -> tuple[str, str] | None:
    """``(package, extra)`` of the first package the converter needs that is not installed."""
    for pkg, extra in REGISTRY[engine].packages:
        if importlib.util.find_spec(pkg) is None:
            return pkg, extra
    return None


def load_converter(engine: Engine) -> Converter:
    """Instantiate the converter for ``engine``.

    Raises:
        MissingExtraError: a package it needs is not installed (names the extra).
        ConversionError: the converter module is not part of this installation.
    """
    miss = missing_package(engine)
    if miss:
        raise MissingExtraError(miss[0], miss[1])
    module, cls = REGISTRY[engine].target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise ConversionError(f"{engine.value}: converter module {module} is not available in this installation") from e
        raise MissingExtraError(e.name or str(e), REGISTRY[engine].packages[0][1]) from e
    conv = getattr(mod, cls, None)
    if conv is None:
        raise ConversionError(f"{engine.value}: {module} has no converter class {cls}")
    return conv()
