"""Importing every module of ``runtime`` and ``device_agent`` loads no heavy package.

A device installs the ``agent`` extra only: one stray ``import torch`` costs hundreds of MB
and seconds of start-up, and ``toolchain`` is host-only. Engines load lazily when a model
is opened, never on import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: never on a device's import path (the agent extra lacks them, or they are host-only)
HEAVY = ["torch", "onnx", "openvino", "tensorflow", "litert_torch", "toolchain", "jax", "torchao"]
#: runtime goes further: importing it loads no engine at all, not even the agent's own
ENGINES = ["onnxruntime", "ai_edge_litert", "tflite_runtime"]

_SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    imported, failed = [], {}
    for top in sys.argv[2].split(","):
        pkg = importlib.import_module(top)
        imported.append(top)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=top + ".",
                                          onerror=lambda name: failed.setdefault(name, "walk failed")):
            try:
                importlib.import_module(info.name)
                imported.append(info.name)
            except Exception as e:
                failed[info.name] = f"{type(e).__name__}: {e}"
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
    print(json.dumps({"imported": imported, "failed": failed, "heavy": heavy}))
    """
)


def _import_all(tops: list[str], forbidden: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(forbidden), ",".join(tops)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_imports_no_engine_and_nothing_heavy():
    result = _import_all(["runtime"], HEAVY + ENGINES)
    assert {"runtime.backends.ort", "runtime.backends.openvino", "runtime.backends.tflite"} <= set(result["imported"])
    assert result["failed"] == {}, f"modules that do not import: {result['failed']}"
    assert result["heavy"] == [], f"loaded on import: {result['heavy']}"


def test_runtime_and_device_agent_import_nothing_heavy():
    result = _import_all(["runtime", "device_agent"], HEAVY)
    assert "device_agent" in result["imported"]
    assert result["failed"] == {}, f"modules that do not import: {result['failed']}"
    assert result["heavy"] == [], f"loaded on import: {result['heavy']}"
