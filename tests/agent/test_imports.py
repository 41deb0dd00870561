"""Import weight: every device_agent and runtime module loads without torch, onnx, openvino or toolchain."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "onnx", "openvino", "tensorflow", "litert_torch", "toolchain")


def test_device_agent_and_runtime_import_nothing_heavy():
    code = r"""
import importlib, json, pkgutil, sys
import device_agent, runtime
names = []
for pkg in (device_agent, runtime):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        names.append(m.name)
failed = {}
for n in names:
    try:
        importlib.import_module(n)
    except ImportError as e:  # an optional engine backend whose package is missing here
        failed[n] = str(e)
print(json.dumps({"modules": names, "failed": failed, "loaded": sorted(sys.modules)}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert "device_agent.agent" in out["modules"] and "device_agent.serving.http" in out["modules"]
    heavy = [m for m in out["loaded"] if m.split(".")[0] in FORBIDDEN]
    assert heavy == [], heavy
