"""Bundle format: strict model.json, deterministic packaging, and the tar checks the store relies on."""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from device_agent.store import BundleRejectedError, Store
from runtime.contracts.bundle import (
    BundleError, BundleInfo, Requirements, Tolerances, compare_outputs, compatibility_problems,
    golden_calls, read_bundle_info,
)
from runtime.spec import Engine


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def _write_tar(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tf.addfile(ti)
    return path


def test_model_json_round_trips_and_is_strict(bundles):
    info = bundles["v1"].info
    d = info.to_json()
    assert BundleInfo.from_json(json.loads(json.dumps(d))) == info
    for mutate, needle in [
        (lambda d: d.update(extra=1), "unknown key(s) ['extra']"),
        (lambda d: d["requirements"].update(gpu="x"), "requirements: unknown key(s) ['gpu']"),
        (lambda d: d.pop("release"), "missing key(s) ['release']"),
        (lambda d: d.update(release=0), "release: must be >= 1"),
        (lambda d: d.update(release=True), "release: expected an integer"),
        (lambda d: d.update(latency_budget_ms=-5), "latency_budget_ms: must be > 0"),  # gate could never pass
        (lambda d: d.update(version="one"), "not a semantic version"),
        (lambda d: d.update(engine="tensorrt"), "engine: 'tensorrt' is not one of"),
        (lambda d: d.update(schema_version=4), "schema_version: 4 is not supported"),
        (lambda d: d.update(schema_version=3), "missing key(s) ['capture']"),  # schema 3 carries it (null allowed)
        (lambda d: d.update(capture=None), "unknown key(s) ['capture']"),  # a rule-less bundle stays schema 2
        (lambda d: d.pop("drift"), "missing key(s) ['drift']"),  # schema 2 carries it (null allowed)
        (lambda d: d.update(schema_version=1), "unknown key(s) ['drift']"),  # schema 1 has none
        (lambda d: d["files"].append({"path": "../x", "sha256": "0" * 64, "bytes": 1}), "climbs out"),
        (lambda d: d["files"].pop(), "is not listed"),
        (lambda d: d["io"]["inputs"][0].update(dtype="float99"), "not a numpy dtype"),
    ]:
        bad = copy.deepcopy(d)
        mutate(bad)
        with pytest.raises(BundleError) as e:
            BundleInfo.from_json(bad)
        assert needle in str(e.value), (needle, str(e.value))


def test_package_is_deterministic_and_content_addressed(tmp_path, helpers, bundles):
    again = helpers.make_bundle(tmp_path, release=1, scale=1.0)
    assert again.path.read_bytes() == bundles["v1"].path.read_bytes()
    assert again.path.name == f"tiny-1-{again.sha256[:12]}.tar"
    assert bundles["v2"].sha256 != bundles["v1"].sha256
    with tarfile.open(again.path) as tf:
        ms = tf.getmembers()
    assert [m.name for m in ms] == sorted(m.name for m in ms) == ["golden.npz", "model.json", "model/model.onnx"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.isreg() for m in ms)
    info = read_bundle_info(again.path)
    assert info.requirements.opset == 17 and info.requirements.engine == Engine.ONNXRUNTIME
    assert info.golden_calls == 4 and set(info.input_stats) == {"x"} and set(info.output_stats) == {"y"}
    assert info.source.artifact_id == "onnxruntime-fp32"


def test_golden_set_reproduces_on_the_engine(bundles, tmp_path):
    from runtime import open_model

    store = Store(tmp_path / "s")
    ref = store.install_bundle(bundles["picker"].path)
    info = store.info(ref.sha256)
    with np.load(store.model_dir(ref.sha256) / "golden.npz") as z:
        calls = golden_calls({k: z[k] for k in z.files}, info)
    assert len(calls) == 4
    with open_model(store.model_path(ref.sha256)) as sess:
        for feeds, expected in calls:
            assert compare_outputs(sess.run(feeds), expected, info.tolerances) == []
            wrong = {k: v + 1.0 for k, v in expected.items()}
            assert any("max abs error" in p for p in compare_outputs(sess.run(feeds), wrong, info.tolerances))
    nan = {k: np.full_like(v, np.nan) for k, v in expected.items()}
    assert any("NaN" in p for p in compare_outputs(nan, expected, Tolerances(atol=1.0, min_cosine=0.0)))


def test_compatibility_problems_are_named():
    req = Requirements(engine=Engine.ONNXRUNTIME, min_engine_version="1.18.0", arch=("aarch64",), opset=21)
    assert compatibility_problems(req, machine="arm64", engine_versions={"onnxruntime": "1.20.1"},
                                  max_opset=22) == []
    probs = compatibility_problems(req, machine="x86_64", engine_versions={"onnxruntime": "1.17.3"}, max_opset=20)
    assert len(probs) == 3 and "arch x86_64" in probs[0] and "older than 1.18.0" in probs[1] and "opset 21" in probs[2]
    assert "not installed" in compatibility_problems(req, machine="aarch64", engine_versions={})[0]


def test_package_refuses_a_modified_build_and_a_failed_artifact(tmp_path, helpers):
    from toolchain.package import PackageError, package_build

    build = helpers.make_build(tmp_path / "b")
    (build / "onnxruntime-fp32" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(PackageError, match="sha256 differs"):
        package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=tmp_path / "o")
    build = helpers.make_build(tmp_path / "c")
    m = json.loads((build / "manifest.json").read_text())
    m["artifacts"][0]["status"] = "gate_failed"
    (build / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="only verified artifacts"):
        package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=tmp_path / "o")
    with pytest.raises(PackageError, match="no artifact 'nope'"):
        package_build(build, artifact_id="nope", version="1.0.0", release=1, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_package_cli(tmp_path, helpers):
    from toolchain.cli import main

    build = helpers.make_build(tmp_path / "b")
    out = tmp_path / "out"
    assert main(["package", str(build), "--artifact", "onnxruntime-fp32", "--version", "2.0.0", "--release", "7",
                 "--latency-budget-ms", "5", "--golden-samples", "2", "--out", str(out)]) == 0
    (bundle,) = out.glob("tiny-7-*.tar")
    info = read_bundle_info(bundle)
    assert info.latency_budget_ms == 5.0 and info.golden_calls == 2 and info.version == "2.0.0"
    assert main(["package", str(build), "--artifact", "onnxruntime-fp32", "--version", "x", "--release", "1",
                 "--out", str(out)]) == 2
    assert main(["package", str(build), "--artifact", "onnxruntime-fp32", "--version", "2.0.0", "--release", "8",
                 "--latency-budget-ms", "0", "--out", str(out)]) == 2
    assert not list(out.glob("tiny-8-*"))  # nothing written


BAD_TARS = {
    "traversal": ("../evil", "climbs out"),
    "absolute": ("/etc/evil", "absolute"),
    "unexpected": ("model/extra.bin", "unexpected ['model/extra.bin']"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARS) + ["symlink", "hardlink", "tampered", "missing", "not_a_tar",
                                                      "duplicate"])
def test_store_rejects_bad_bundles_and_stays_clean(case, bundles, tmp_path):
    good = _members(bundles["v1"].path)
    path = tmp_path / "bad.tar"
    if case in BAD_TARS:
        name, needle = BAD_TARS[case]
        _write_tar(path, {**good, name: b"x"})
    elif case in ("symlink", "hardlink"):
        ti = tarfile.TarInfo("model/link")
        ti.type, ti.linkname = (tarfile.SYMTYPE, "/etc/passwd") if case == "symlink" else (tarfile.LNKTYPE, "model.json")
        _write_tar(path, good, [ti])
        needle = "symlink" if case == "symlink" else "hard link"
    elif case == "tampered":
        onnx_bytes = bytearray(good["model/model.onnx"])
        onnx_bytes[-1] ^= 0xFF
        _write_tar(path, {**good, "model/model.onnx": bytes(onnx_bytes)})
        needle = "model/model.onnx has sha256"
    elif case == "missing":
        _write_tar(path, {k: v for k, v in good.items() if k != "golden.npz"})
        needle = "missing ['golden.npz']"
    elif case == "duplicate":
        _write_tar(path, good, [])
        with tarfile.open(path, "a:") as tf:
            ti = tarfile.TarInfo("golden.npz")
            ti.size = len(good["golden.npz"])
            tf.addfile(ti, io.BytesIO(good["golden.npz"]))
        needle = "appears twice"
    else:
        path.write_bytes(b"not a tar at all" * 100)
        needle = "not a readable uncompressed tar"
    store = Store(tmp_path / "state")
    with pytest.raises(BundleRejectedError) as e:
        store.install_bundle(path)
    assert needle in str(e.value)
    assert list((tmp_path / "state" / "models").iterdir()) == []
    assert list((tmp_path / "state" / "tmp").iterdir()) == []
    assert store.active() is None
    assert not (tmp_path / "evil").exists()


def test_package_takes_tolerances_from_verification(tmp_path, helpers):
    from toolchain.package import package_build

    build = helpers.make_build(tmp_path / "b")
    m = json.loads((build / "manifest.json").read_text())
    m["artifacts"][0]["verification"].update(tolerances={"atol": None, "min_cosine": 0.85}, max_abs_error=0.25)
    (build / "manifest.json").write_text(json.dumps(m))
    res = package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=tmp_path / "o")
    assert res.info.tolerances == Tolerances(atol=0.25, min_cosine=0.85)
    assert res.path.stat().st_mode & 0o044 == 0o044  # readable by others: bundles get copied around


def test_golden_compare_does_not_judge_cosine_on_an_exact_near_zero_map():
    """A text detector's empty probability map: two fp32 engines agree to ~4e-7, yet the
    cosine of the noise is far under 0.999. The device must not refuse that answer; a
    near-zero map that is really wrong (an error of the map's own size) still fails."""
    rng = np.random.default_rng(0)
    golden = (rng.random((1, 1, 256, 256)) * 1e-7).astype(np.float32)
    golden[0, 0, 10, 10] = 1e-3                 # one faint blob on an empty page
    noisy = golden + rng.uniform(-4e-7, 4e-7, golden.shape).astype(np.float32)
    got_cos = float(noisy.ravel().astype(np.float64) @ golden.ravel()
                    / (np.linalg.norm(noisy.astype(np.float64)) * np.linalg.norm(golden)))
    tol = Tolerances(atol=1e-3, min_cosine=0.999)
    assert got_cos < tol.min_cosine          # the old rule refused this exact answer
    assert compare_outputs({"map": noisy}, {"map": golden}, tol) == []
    wrong = golden.copy()
    wrong[0, 0, 10, 10] = 0.0
    problems = compare_outputs({"map": wrong}, {"map": golden}, Tolerances(atol=1.0, min_cosine=0.99))
    assert any("cosine" in p for p in problems)
