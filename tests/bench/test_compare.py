"""`bench compare` on synthetic results built from known samples: regressions beyond noise are
flagged, changes within noise are not, broken cells count, and the CLI exit code says so."""

import copy
import json

import numpy as np
import pytest

from runtime.bench.stats import summarize
from toolchain.bench import compare, result as result_mod


def _cell(key, samples, status="ok"):
    return {"key": key, "artifact_id": key.split("__")[0], "engine": "onnxruntime", "precision": "fp32",
            "scenario": "single_stream", "batch": 1, "threads": 1, "streams": 1, "status": status,
            "trials": [], "errors": [] if status == "ok" else [{"type": "ModelLoadError", "message": "gone"}],
            "stats": summarize(samples).to_json() if status == "ok" else None}


def _result(cells):
    return result_mod.new_result(source={"kind": "build", "path": "b"}, settings={}, environment={"cpu_model": "X"},
                                 targets=[], cells=cells, order=[c["key"] for c in cells], analysis={})


def _samples(center, *, n=1000, cv=0.02, seed=0):
    return np.random.default_rng(seed).normal(center, center * cv, n).clip(min=center * 0.5)


def test_regression_beyond_noise_is_flagged():
    old = _result([_cell("a__b1", _samples(10e-3)), _cell("b__b1", _samples(5e-3, seed=1))])
    new = _result([_cell("a__b1", _samples(11e-3, seed=2)), _cell("b__b1", _samples(5e-3, seed=3))])
    cmp = compare.compare(old, new)
    assert [r["key"] for r in cmp["regressions"]] == ["a__b1"]
    assert cmp["regressions"][0]["rel"] == pytest.approx(0.10, abs=0.01)
    assert [r["key"] for r in cmp["same"]] == ["b__b1"]
    assert cmp["regressed"]


def test_small_change_within_threshold_or_noise_is_not_flagged():
    old = _result([_cell("a", _samples(10e-3))])
    new = _result([_cell("a", _samples(10.3e-3, seed=5))])  # +3% < 5% minimum
    assert not compare.compare(old, new)["regressed"]
    noisy_old = _result([_cell("a", _samples(10e-3, n=40, cv=0.5))])
    noisy_new = _result([_cell("a", _samples(11e-3, n=40, cv=0.5, seed=9))])  # +10% but very noisy
    cmp = compare.compare(noisy_old, noisy_new)
    assert not cmp["regressed"] and cmp["same"][0]["threshold_rel"] > 0.10


def test_cv_fallback_when_no_ci():
    old = _result([_cell("a", _samples(10e-3, n=1000))])
    new = _result([_cell("a", _samples(12e-3, n=1000, seed=4))])
    for c in old["cells"] + new["cells"]:
        c["stats"]["ci_s"]["p50"] = None
    cmp = compare.compare(old, new)
    assert cmp["regressions"][0]["method"] == "cv"


def test_improvement_and_broken_and_missing():
    old = _result([_cell("a", _samples(10e-3)), _cell("b", _samples(10e-3)), _cell("c", _samples(1e-3))])
    new = _result([_cell("a", _samples(8e-3, seed=3)), _cell("b", [], status="error")])
    cmp = compare.compare(old, new)
    assert [r["key"] for r in cmp["improvements"]] == ["a"]
    assert [b["key"] for b in cmp["broken"]] == ["b"]
    assert cmp["missing_in_new"] == ["c"]
    assert cmp["regressed"]
    assert "BROKEN" in compare.format_comparison(cmp)


def test_cli_exit_codes(tmp_path, capsys):
    from toolchain.cli import main  # the one error handler turns bad input into exit code 2

    old = _result([_cell("a", _samples(10e-3))])
    slow = _result([_cell("a", _samples(13e-3, seed=1))])
    result_mod.save(old, tmp_path / "old.json")
    result_mod.save(slow, tmp_path / "new.json")
    result_mod.save(copy.deepcopy(old), tmp_path / "same.json")
    assert main(["bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "same.json")]) == 0
    assert main(["bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--threshold", "0.5"]) == 0
    (tmp_path / "junk.json").write_text(json.dumps({"kind": "other"}))
    assert main(["bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "junk.json")]) == 2
    capsys.readouterr()
    for bad in ("0", "-0.1", "nan", "inf"):
        rc = main(["bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--threshold", bad])
        out, err = capsys.readouterr()
        assert rc == 2 and "--threshold" in err and "must be a relative p50 change above 0" in err and not out


def test_different_models_are_warned_about():
    old = _result([_cell("a", _samples(10e-3))])
    new = _result([_cell("a", _samples(10e-3, seed=1))])
    assert "source_changes" in compare.compare(old, new) and not compare.compare(old, new)["source_changes"]
    old["source"]["model"], new["source"]["model"] = {"name": "resnet18"}, {"name": "digits"}
    cmp = compare.compare(old, new)
    assert cmp["source_changes"] == {"model": ["resnet18", "digits"]}
    assert "WARNING: different models: model: 'resnet18' -> 'digits'" in compare.format_comparison(cmp)
