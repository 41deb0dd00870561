"""`edgeship data inspect|split` and `edgeship compile` on capture sets: verified reading,
tamper/partial refusal naming the file, dedup and per-device stratification, provenance in
the build manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.contracts.capture import fileformat as ff
from toolchain.cli import main
from toolchain.data import captures, split as split_mod

from capturehelpers import host_capture as _cap  # noqa: E402 (tests/capture is on sys.path)


@pytest.fixture
def capset(tmp_path):
    w = captures.SetWriter(tmp_path / "pulled")
    for i in range(12):
        dev = "cam-1" if i < 8 else "cam-2"
        w.add(_cap(i, dev, release=1 if i < 10 else 2), subdir=dev)
    dup = _cap(3, "cam-2", n=2)  # the same content as capture 3 of cam-1, from another device
    w.add(ff.Capture(meta=ff.CaptureMeta(**{**dup.meta.__dict__, "id": "1700000099000-dupe", "ts_ms": 1_700_000_099_000}),
                     inputs=dup.inputs, outputs=dup.outputs, labels=dup.labels), subdir="cam-2")
    w.commit()
    return tmp_path / "pulled"


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_reports_per_device_and_release_with_baseline_and_class_mix(capset, tmp_path, capsys):
    from toolchain.demo_ota import make_tiny_bundle

    b = make_tiny_bundle(tmp_path / "b", release=1)
    code, out, err = _run(["data", "inspect", str(capset), "--bundle", str(b.path), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["captures"] == 13 and rep["samples"] == 26 and rep["devices"] == ["lab/cam-1", "lab/cam-2"]
    groups = {(g["device"], g["release"]): g for g in rep["groups"]}
    assert groups[("lab/cam-1", 1)]["captures"] == 8 and groups[("lab/cam-2", 2)]["captures"] == 2
    allg = groups[("*", "*")]
    x = allg["tensors"]["x"]
    assert x["values"] == 26 * 4 and "out_of_range_share" in x and "mean_shift_sd" in x
    assert rep["class_output"] == "y" and set(allg["predicted_class_mix"]) == {"0", "1", "2"}
    assert allg["label_mix"] is not None
    code, out, _ = _run(["data", "inspect", str(capset)], capsys)
    assert code == 0 and "lab/cam-2" in out and "class mix" in out and "no --bundle" in out


def test_inspect_and_compile_refuse_a_tampered_or_partial_file_naming_it(capset, capsys, tmp_path):
    victim = sorted((capset / "cam-1").glob("*.npz"))[2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    victim.write_bytes(bytes(raw))
    code, out, err = _run(["data", "inspect", str(capset)], capsys)
    assert code == 2 and f"cam-1/{victim.name}: tampered" in err
    victim.write_bytes(bytes(raw)[:100])
    code, out, err = _run(["data", "split", str(capset), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and f"cam-1/{victim.name}: partial" in err
    from toolchain.compile.data import load_arrays
    from toolchain.errors import DataError

    with pytest.raises(DataError, match=f"capture data refused: .*cam-1/{victim.name}: partial"):
        load_arrays(str(capset))
    with pytest.raises(DataError, match="partial"):          # one file alone, checked against the index
        load_arrays(str(victim))
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "a.npz").write_bytes(ff.encode(_cap(1, "cam-1")))
    with pytest.raises(DataError, match="without a capture-set index"):
        load_arrays(str(lone / "a.npz"))


def test_split_dedups_and_stratifies_per_device(capset, tmp_path, capsys):
    code, out, err = _run(["data", "split", str(capset), "--out", str(tmp_path / "s"), "--validation-share", "0.25",
                           "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    d1, d2 = rep["devices"]["lab/cam-1"], rep["devices"]["lab/cam-2"]
    assert d1["unique_samples"] == 16 and d2["unique_samples"] == 8 and d2["duplicates_dropped"] == 2
    assert (d1["validation"], d2["validation"]) == (4, 2)
    cal, val = (list(ff.load_set(tmp_path / "s" / n)) for n in ("calibration", "validation"))
    hashes = [s.content_sha256 for s in captures.samples(cal + val)]
    assert len(hashes) == len(set(hashes)) == 24
    assert {c.meta.device for _, c in val} == {"cam-1", "cam-2"}
    # deterministic, and a device's split does not depend on the others
    again, _ = split_mod.choose(list(captures.samples(list(ff.load_set(capset)))), validation_share=0.25, seed=0,
                                labelled_validation=False)
    assert sorted(s.content_sha256 for s in again["validation"]) == sorted(
        s.content_sha256 for s in captures.samples(val))
    code, _, err = _run(["data", "split", str(capset), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "not empty" in err


def test_compile_reads_a_capture_set_and_records_its_provenance(capset, tmp_path, capsys):
    import onnx

    from toolchain.demo_ota import _tiny_onnx

    onnx.save(_tiny_onnx(1.0), tmp_path / "tiny.onnx")
    code, _, _ = _run(["data", "split", str(capset), "--out", str(tmp_path / "s"), "--labelled-validation"], capsys)
    assert code == 0
    code, out, err = _run(["compile", str(tmp_path / "tiny.onnx"), "--targets", "onnxruntime", "--precisions",
                           "fp32,int8", "--calibration", str(tmp_path / "s" / "calibration"), "--validation",
                           str(tmp_path / "s" / "validation"), "--task", "regress", "--out", str(tmp_path / "build"),
                           "--json"], capsys)
    assert code in (0, 3), err
    man = json.loads(out)
    prov = man["data_provenance"]
    assert prov["calibration"]["kind"] == "capture_set" and prov["validation"]["devices"] == ["lab/cam-1", "lab/cam-2"]
    assert prov["calibration"]["samples"] == man["calibration"]["samples"]
    assert prov["validation"]["time_range_utc"][0].startswith("2023-11-14T22:13")
    assert prov["validation"]["sha256"] == captures.set_sha256(ff.read_index(tmp_path / "s" / "validation"))
    assert man["validation"]["labels"] is True
