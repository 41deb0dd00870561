"""Import weight: every device_agent and runtime module loads without torch, onnx, openvino or toolchain.

This is the run-time half of the check (what really gets loaded); tests/test_layering.py is
the static half, which also catches a stray import of a package that is not installed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "onnx", "openvino", "tensorflow", "litert_torch", "toolchain")
#: packages of the agent's optional extras: a module may fail to import only for want of one
#: of these, and only where it is really not installed
OPTIONAL = ("paho", "tuf", "starlette", "uvicorn", "httptools", "psutil", "urllib3", "securesystemslib",
            "onnxruntime", "ai_edge_litert", "tflite_runtime")


def test_device_agent_and_runtime_import_nothing_heavy():
    code = r"""
import importlib, importlib.util, json, pkgutil, sys
import device_agent, runtime
names = []
for pkg in (device_agent, runtime):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        names.append(m.name)
failed = {}
for n in names:
    try:
        importlib.import_module(n)
    except ImportError as e:
        top = (e.name or "").split(".")[0]
        failed[n] = {"error": str(e), "missing": top,
                     "installed": bool(top) and importlib.util.find_spec(top) is not None}
print(json.dumps({"modules": names, "failed": failed, "loaded": sorted(sys.modules)}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert "device_agent.agent" in out["modules"] and "device_agent.serving.http" in out["modules"]
    # an ImportError is fine only for an optional extra that is really missing here; a stray
    # `import onnx` (or a typo) fails here, and tests/test_layering.py catches it statically too
    wrong = {n: f for n, f in out["failed"].items() if f["missing"] not in OPTIONAL or f["installed"]}
    assert wrong == {}, wrong
    heavy = [m for m in out["loaded"] if m.split(".")[0] in FORBIDDEN]
    assert heavy == [], heavy
