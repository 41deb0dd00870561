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


def is_available(engine: Engine) -> bool:
    return any(importlib.util.find_spec(m) is not None for m in BACKENDS[engine][1])


def available_engines() -> list[Engine]:
    return [e for e in Engine if is_available(e)]


def session_class(engine: Engine):
    """The Session subclass for ``engine``.

    Raises:
        EngineNotInstalledError: none of the engine's packages is installed.
    """
    target, _mods = BACKENDS[engine]
    if not is_available(engine):
        raise EngineNotInstalledError(engine.value, ENGINE_EXTRA[engine])
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
