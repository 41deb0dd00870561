"""A missing or broken engine package fails with an error that names the pip extra.

Each case runs in a subprocess whose ``sys.meta_path`` starts with a finder that hides the
engine's packages, as on a device where the extra was not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_HIDE = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, json, sys

    HIDDEN = set(sys.argv[1].split(","))
    BROKEN = sys.argv[2] == "broken"

    class _BrokenLoader(importlib.abc.Loader):
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            raise ImportError(f"libfake.so: cannot open shared object file ({module.__name__})")

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in HIDDEN:
                return None
            if BROKEN:  # installed, but its native library does not load
                return importlib.machinery.ModuleSpec(name, _BrokenLoader())
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Hide())
    import runtime
    from runtime import Engine
    result = {"available": [e.value for e in runtime.available_engines()]}
    try:
        runtime.open_model(sys.argv[3], engine=sys.argv[4])
        result["error"] = None
    except runtime.EngineNotInstalledError as e:
        result.update(error=type(e).__name__, message=str(e), extra=e.extra)
    result["hidden_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN and sys.modules[m] is not None)
    print(json.dumps(result))
    """
)


def _run(hidden: str, mode: str, model: Path, engine: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _HIDE, hidden, mode, str(model), engine],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "hidden,engine,extra,model",
    [
        ("openvino", "openvino", "openvino", "onnx_linear"),
        ("ai_edge_litert,tflite_runtime", "tflite", "tflite", "tflite_path"),
        ("onnxruntime", "onnxruntime", "agent", "onnx_linear"),
    ],
)
@pytest.mark.parametrize("mode", ["missing", "broken"])
def test_missing_engine_names_the_extra(hidden, engine, extra, model, mode, request, tmp_path):
    if model == "tflite_path":  # any file: the engine check comes before reading it
        path = tmp_path / "m.tflite"
        path.write_bytes(b"TFL3")
    else:
        path = request.getfixturevalue(model)
    result = _run(hidden, mode, path, engine)
    assert result["error"] == "EngineNotInstalledError"
    assert result["extra"] == extra
    assert f"pip install 'edgeship[{extra}]'" in result["message"]
    if mode == "missing":
        assert engine not in result["available"]
    else:
        assert "libfake.so" in result["message"]  # the real cause is in the message


def test_tflite_falls_back_to_tflite_runtime_only_when_litert_is_missing(tmp_path):
    """With ai_edge_litert hidden and no tflite_runtime installed, the error lists both."""
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3")
    result = _run("ai_edge_litert", "broken", path, "tflite")
    assert result["error"] == "EngineNotInstalledError"
    assert "ai_edge_litert" in result["message"] and "tflite_runtime" in result["message"]
