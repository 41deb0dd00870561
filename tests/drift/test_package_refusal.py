"""`edgeship package` refuses a build whose validation data would make a broken drift baseline,
and drift thresholds out of range: exit 2, one error line naming the tensor or flag, no bundle."""

from __future__ import annotations

import json

import numpy as np

from toolchain.cli import main
from toolchain.demo_ota import make_tiny_build, write_ort_fp32_manifest


def _package(build, out, capsys, *extra):
    code = main(["package", str(build), "--artifact", "onnxruntime-fp32", "--version", "1.0.0", "--release", "1",
                 "--out", str(out), *extra])
    return code, capsys.readouterr()


def test_nan_in_the_validation_data_is_refused_at_package_time(tmp_path, capsys):
    build = make_tiny_build(tmp_path / "b", samples=300)
    x = np.load(build / "data" / "validation.npz")["x"]
    x[7, 2] = np.nan
    np.savez(build / "data" / "validation.npz", x=x)
    io = json.loads((build / "manifest.json").read_text())["io"]
    write_ort_fp32_manifest(build, name="tiny", source="toolchain.demo_ota", io=io, samples=300)
    code, out = _package(build, tmp_path / "out", capsys)
    assert code == 2, out.err
    assert "input 'x': 1 NaN/Inf value(s) in the validation data" in out.err and "Traceback" not in out.err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # nothing written


def test_drift_thresholds_out_of_range_are_refused(tmp_path, capsys):
    build = make_tiny_build(tmp_path / "b", samples=300)
    code, out = _package(build, tmp_path / "out", capsys, "--drift-psi", "0")
    assert code == 2 and "--drift-psi" in out.err and "must be > 0" in out.err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    code, out = _package(build, tmp_path / "out", capsys)  # the same build with sound thresholds packages
    assert code == 0, out.err
    assert "drift    baseline of 2 tensor(s)" in out.out
