"""Backend table: engine -> "module:Class", plus the packages that provide it.

Listing what is available uses ``importlib.util.find_spec`` and imports no engine.
"""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import EngineNotInstalledError
from ..spec import ENGINE_EXTRA, Engine

#: engine -> (module:class, import names that provide it, first found wins)
BACKENDS: dict[Engine, tuple[str, tuple[str, ...]]] = {
    Engine.ONNXRUNTIME: ("runtime.backends.ort:OrtSession", ("onnxruntime",)),
    Engine.OPENVINO: ("runtime.backends.openvino:OpenVinoSession", ("openvino",)),
    Engine.TFLITE: ("runtime.backends.tflite:TfliteSession", ("ai_edge_litert", "tflite_runtime")),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import hook refuses it, or a parent package is missing
        return False


def is_available(engine: Engine) -> bool:
    """True when one of the engine's packages is installed (imports nothing)."""
    return any(_installed(m) for m in BACKENDS[engine][1])


def available_engines() -> list[Engine]:
    return [e for e in Engine if is_available(e)]


def session_class(engine: Engine):
    """The Session subclass for ``engine``.

    Raises:
        EngineNotInstalledError: none of the engine's packages is installed, or the one
            found does not import (a broken install); the message names the pip extra.
    """
    target, mods = BACKENDS[engine]
    if not is_available(engine):
        raise EngineNotInstalledError(engine.value, ENGINE_EXTRA[engine], f"none of {list(mods)} is importable")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def import_engine(engine: Engine, module: str):
    """Import an engine's package inside a backend's ``_open``.

    Raises:
        EngineNotInstalledError: the package is missing or broken (e.g. a native library
            fails to load); the message names the extra and the import error.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EngineNotInstalledError(engine.value, ENGINE_EXTRA[engine], f"{module} does not import: {e}") from e
