"""Pure verification figures (numpy only) and the crash-safe build-dir helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from toolchain.compile import manifest as mf
from toolchain.compile.fidelity import Task
from toolchain.compile.verify import Precision, UserGates, compare


def test_figures_against_numpy() -> None:
    rng = np.random.default_rng(0)
    ref = {"logits": rng.standard_normal((50, 10)).astype(np.float32)}
    noise = 0.01 * rng.standard_normal((50, 10)).astype(np.float32)
    cand = {"logits": ref["logits"] + noise}
    labels = ref["logits"].argmax(1)
    labels[:5] = (labels[:5] + 1) % 10  # reference accuracy 90%
    v = compare(reference=ref, candidate=cand, output_names=["logits"], labels=labels,
                reference_accuracy=0.9, task=None, precision=Precision.INT8, gates=UserGates(atol=1.0, min_cosine=0.99))
    r, c = ref["logits"].astype(np.float64), cand["logits"].astype(np.float64)
    cos = (r * c).sum(1) / np.linalg.norm(r, axis=1) / np.linalg.norm(c, axis=1)
    assert v["max_abs_error"] == pytest.approx(np.abs(noise).max(), rel=1e-6)
    assert v["cosine_min"] == pytest.approx(cos.min()) and v["cosine_mean"] == pytest.approx(cos.mean())
    assert v["top1_agreement"] == pytest.approx((r.argmax(1) == c.argmax(1)).mean())
    assert v["accuracy"] == pytest.approx((c.argmax(1) == labels).mean())
    assert v["passed"] and v["failures"] == []
    assert v["task"] == "classify" and v["fidelity"]["metric"] == "accuracy_drop_pts"
    assert v["fidelity"]["per_output"]["logits"]["value"] == pytest.approx(v["top1_agreement"])


def test_gate_messages_name_the_figure_and_limit() -> None:
    ref = {"y": np.ones((4, 3), np.float32)}
    cand = {"y": np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 3, 0]], np.float32)}
    v = compare(reference=ref, candidate=cand, output_names=["y"], labels=np.array([0, 0, 0, 0]),
                reference_accuracy=1.0, task=Task.CLASSIFY, precision=Precision.INT8,
                gates=UserGates(atol=0.5, min_cosine=0.85, max_accuracy_drop_pts=10.0))
    assert not v["passed"]
    assert any(f.startswith("max_abs_error 2 > atol 0.5") for f in v["failures"])
    assert any(f.startswith("cosine_min") and "< min_cosine 0.85" in f for f in v["failures"])
    assert any(f.startswith("accuracy_drop_pts 25.00 > max_accuracy_drop 10") for f in v["failures"])
    assert any(f.startswith("y: top1_agreement 0.75 < budget 0.9") for f in v["failures"])


def test_non_classifier_outputs_have_no_top1() -> None:
    ref = {"h": np.zeros((3, 4, 5), np.float32)}
    v = compare(reference=ref, candidate=ref, output_names=["h"], labels=None, reference_accuracy=None,
                task=None, precision=Precision.FP32, gates=UserGates(atol=0.0, min_cosine=1.0))
    assert v["top1_agreement"] is None and v["accuracy"] is None and v["cosine_min"] == 1.0 and v["passed"]
    assert v["task"] == "embed" and v["fidelity"]["value"] == 1.0  # all-zero output, exact artifact


def test_status_and_exit_codes() -> None:
    ok, failed, gate = {"status": "ok"}, {"status": "failed"}, {"status": "gate_failed"}
    assert mf.build_status([ok, ok]) == "ok" and mf.exit_code("ok") == 0
    assert mf.build_status([ok, failed]) == "partial" and mf.exit_code("partial") == 3
    assert mf.build_status([ok, gate]) == "failed" and mf.exit_code("failed") == 1
    assert mf.build_status([failed]) == "failed"


def test_finalize_swaps_and_leftovers_of_live_builds_are_kept(tmp_path: Path) -> None:
    final = tmp_path / "m"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = mf.staging_dir(tmp_path, "m")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    mf.finalize(staging, final, {"schema_version": 1})
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    dead, live = tmp_path / ".m.staging-999999999", tmp_path / f".m.staging-{os.getppid()}"
    dead.mkdir()
    live.mkdir()
    mf.clean_leftovers(tmp_path, "m")
    assert not dead.exists() and live.exists()


def test_top1_and_accuracy_figures_come_from_the_class_head() -> None:
    """A regression head first (MTCNN O-Net order): the recorded top-1 agreement and accuracy
    are the class head's, and consistent with the build-level accuracy drop."""
    rng = np.random.default_rng(5)
    face = rng.random((40, 2)).astype(np.float32)
    ref = {"bbox_regression": rng.standard_normal((40, 4)).astype(np.float32), "face_probability": face / face.sum(1, keepdims=True)}
    cand = {"bbox_regression": ref["bbox_regression"][:, ::-1].copy(), "face_probability": ref["face_probability"]}
    labels = ref["face_probability"].argmax(1)
    v = compare(reference=ref, candidate=cand, output_names=list(ref), labels=labels, reference_accuracy=1.0,
                task=Task.CLASSIFY, precision=Precision.FP32, gates=UserGates())
    assert v["top1_agreement"] == 1.0 and v["accuracy"] == 1.0 and v["accuracy_drop_pts"] == 0.0
    assert v["fidelity"]["primary_output"] == "face_probability"
    assert v["fidelity"]["per_output"]["bbox_regression"]["metric"] == "rel_max_abs"
    assert not v["passed"] and v["failures"][0].startswith("bbox_regression: rel_max_abs")
