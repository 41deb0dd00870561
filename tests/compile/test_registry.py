"""The converter table: every entry imports, precisions resolve, listing imports nothing heavy."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from runtime.spec import Engine
from toolchain.compile.registry import REGISTRY, resolve_precision
from toolchain.compile.verify import Precision


@pytest.mark.parametrize("engine", list(Engine))
def test_every_registry_entry_imports(engine: Engine) -> None:
    module, cls = REGISTRY[engine].target.split(":")
    conv = getattr(importlib.import_module(module), cls)()
    assert conv.engine == engine
    assert {Precision(p) for p in conv.precisions} == set(REGISTRY[engine].precisions)


def test_precision_aliases() -> None:
    assert resolve_precision(Engine.ONNXRUNTIME, Precision.INT8) is Precision.INT8  # recipe chosen by the graph
    assert resolve_precision(Engine.OPENVINO, Precision.INT8_STATIC) is Precision.INT8
    assert resolve_precision(Engine.TFLITE, Precision.INT8_DYNAMIC) is None
    assert resolve_precision(Engine.TFLITE, Precision.FP16) is None


def test_cli_and_registry_import_no_heavy_module() -> None:
    code = ("import sys, toolchain.cli, toolchain.compile.registry, toolchain.compile.cli\n"
            "toolchain.cli.build_parser()\n"
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'litert_torch') if m in sys.modules]\n"
            "print(heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
