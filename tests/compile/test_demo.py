"""`make demo` smoke run at small sizes: every target builds and the table prints."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_quick_resnet(tmp_path: Path, capsys) -> None:
    from toolchain import demo

    code = demo.main(["--quick", "--models", "resnet18", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "calibrating int8 on RANDOM data" in out.err  # the demo's random-init models say so
    assert "random weights: latency only" in out.out and "top1_agreement" not in out.out
    for aid in ("onnxruntime-int8-static", "openvino-int8", "tflite-int8", "tflite-fp32", "openvino-fp16"):
        assert aid in out.out
    assert (tmp_path / "resnet18" / "manifest.json").is_file()
    # make demo ends with the latency report of every build
    report = tmp_path / "resnet18" / "bench"
    assert (report / "report.html").is_file() and (report / "result.json").is_file()
    assert "<img" in (report / "report.html").read_text()
    assert "=== edgeship bench" in out.out
