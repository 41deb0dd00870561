"""The task-aware fidelity metrics (pure numpy) against hand-computed figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolchain.compile.fidelity import (
    Budgets, Metric, Task, fidelity_json, infer_output_task, infer_task, judge, score,
)


def test_task_round_trips_cli_and_json() -> None:
    for t in Task:
        assert Task.parse(t.value) is t and Task(json.loads(json.dumps(t.value))) is t
    with pytest.raises(ValueError, match="choose one of.*classify"):
        Task.parse("clasify")


def test_default_task_from_shape_and_values() -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((8, 384))
    assert infer_output_task("out", emb / np.linalg.norm(emb, axis=1, keepdims=True)) is Task.EMBED
    assert infer_output_task("embedding", emb) is Task.EMBED
    assert infer_output_task("logits", rng.standard_normal((8, 10))) is Task.CLASSIFY
    assert infer_output_task("y", rng.standard_normal((8, 1))) is Task.REGRESS
    assert infer_output_task("sigmoid_0.tmp_0", rng.random((2, 1, 32, 32))) is Task.SEGMENT
    p = rng.random((2, 5, 30)); p /= p.sum(-1, keepdims=True)
    assert infer_output_task("softmax_11.tmp_0", p) is Task.CLASSIFY
    assert infer_task({"a": rng.standard_normal((4, 1)), "b": emb}) is Task.REGRESS


def test_embedding_is_judged_by_cosine_not_top1() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((16, 384)).astype(np.float32)
    cand = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    sc = score(Task.EMBED, {"embedding": ref}, {"embedding": cand})
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    cos = ((r * c).sum(1) / np.linalg.norm(r, axis=1) / np.linalg.norm(c, axis=1)).min()
    assert sc.metric is Metric.COSINE_MIN and sc.value == pytest.approx(cos)
    ok, failures, budget = judge(sc, precision="int8-dynamic")
    assert ok and budget == 0.98 and failures == []


def test_exact_artifact_on_near_constant_output_passes() -> None:
    ref = np.full((4, 1, 8, 8), 1e-6, np.float32)
    ref[0, 0, 0, 0] = 0.3  # range 0.3; every other sample is near zero
    cand = ref + np.float32(4e-7) * np.sign(np.random.default_rng(2).standard_normal(ref.shape)).astype(np.float32)
    for task in (Task.EMBED, Task.SEGMENT):
        sc = score(task, {"map": ref}, {"map": cand})
        assert judge(sc, precision="fp32")[0], (task, sc)
    # the same noise on a non-exact artifact: relative error is what decides
    bad = ref.copy()
    bad[1] += 0.05
    sc = score(Task.SEGMENT, {"map": ref}, {"map": bad})
    ok, failures, _ = judge(sc, precision="fp32")
    assert not ok and failures[0].startswith("map: rel_max_abs 0.16") and "budget 0.001" in failures[0]


def test_labels_make_accuracy_drop_the_build_figure() -> None:
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    cand = ref.copy()
    cand[0] = [0, 0, 0, 1]
    labels = np.array([0, 1, 2, 3, 0, 1])
    sc = score(None, {"logits": ref}, {"logits": cand}, labels=labels)
    assert sc.metric is Metric.ACCURACY_DROP_PTS and sc.value == pytest.approx(100 / 6, abs=1e-3)
    ok, failures, budget = judge(sc, precision="int8", budgets=Budgets({Metric.ACCURACY_DROP_PTS: 5.0}))
    assert not ok and budget == 5.0 and any(f.startswith("accuracy_drop_pts 16.67 > max_accuracy_drop 5") for f in failures)
    block = fidelity_json(sc, passed=ok, budget=budget)
    assert block["metric"] == "accuracy_drop_pts" and block["higher_is_better"] is False
    assert block["per_output"]["logits"]["metric"] == "top1_agreement"
    assert block["per_output"]["logits"]["value"] == pytest.approx(5 / 6)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differs from the reference"):
        score(Task.REGRESS, {"y": np.zeros((2, 3))}, {"y": np.zeros((2, 4))})


def _onet_like(rng: np.random.Generator, n: int = 64) -> dict[str, np.ndarray]:
    face = rng.random((n, 2))
    return {"bbox_regression": rng.standard_normal((n, 4)).astype(np.float32),
            "landmarks": rng.random((n, 10)).astype(np.float32),
            "face_probability": (face / face.sum(1, keepdims=True)).astype(np.float32)}


def test_regression_heads_of_a_classify_model_are_judged_by_their_error() -> None:
    """MTCNN O-Net declares ``classify``: its box and landmark heads must not be judged by argmax."""
    rng = np.random.default_rng(3)
    ref = _onet_like(rng)
    cand = {k: v.copy() for k, v in ref.items()}
    # tiny noise on the landmarks flips argmaxes (ten near-equal values), well within rel_max_abs
    cand["landmarks"] += 0.01 * rng.standard_normal(ref["landmarks"].shape).astype(np.float32)
    sc = score(Task.CLASSIFY, ref, cand)
    per = sc.per_output
    assert {n: (o.task, o.metric) for n, o in per.items()} == {
        "bbox_regression": (Task.REGRESS, Metric.REL_MAX_ABS), "landmarks": (Task.REGRESS, Metric.REL_MAX_ABS),
        "face_probability": (Task.CLASSIFY, Metric.TOP1_AGREEMENT)}
    assert sc.primary == "face_probability" and sc.metric is Metric.TOP1_AGREEMENT and sc.value == 1.0
    assert per["landmarks"].value < 0.05
    assert (ref["landmarks"].argmax(1) != cand["landmarks"].argmax(1)).any()  # top-1 would have failed it
    assert judge(sc, precision="int8")[0]
    # a box head that keeps its argmax but is off by 30% of its range fails on its error
    bad = {k: v.copy() for k, v in ref.items()}
    span = float(ref["bbox_regression"].max() - ref["bbox_regression"].min())
    bad["bbox_regression"] += np.float32(0.3 * span) * (ref["bbox_regression"] == ref["bbox_regression"].max(1, keepdims=True))
    assert (bad["bbox_regression"].argmax(1) == ref["bbox_regression"].argmax(1)).all()  # top-1 would pass it
    ok, failures, _ = judge(score(Task.CLASSIFY, ref, bad), precision="int8")
    assert not ok and len(failures) == 1, failures
    assert failures[0].startswith("bbox_regression: rel_max_abs 0.3") and failures[0].endswith("budget 0.15 (regress)")
    # labels: the accuracy drop is the class head's
    labels = ref["face_probability"].argmax(1)
    assert score(Task.CLASSIFY, ref, cand, labels=labels).accuracy == 1.0


def test_regression_head_rule_names_and_values() -> None:
    rng = np.random.default_rng(4)
    raw = rng.standard_normal((8, 4))
    p = rng.random((8, 5)); p /= p.sum(1, keepdims=True)
    for name in ("bbox_regression", "landmarks", "bbox_pred", "boxes", "keypoints", "offset", "loc_delta"):
        assert infer_output_task(name, raw) is Task.REGRESS, name
    assert infer_output_task("box_scores", raw) is Task.CLASSIFY  # a class word beside the box word
    assert infer_output_task("box_head", p) is Task.CLASSIFY  # rows that are probabilities
    assert infer_output_task("output", raw) is Task.CLASSIFY  # unnamed [N, C]: class scores, as before
    assert infer_output_task("bbox_regression", rng.standard_normal((2, 4, 6, 8))) is Task.SEGMENT  # dense map
    # a model-level task other than classify still applies to a regression head
    ref = _onet_like(rng)
    assert score(Task.EMBED, ref, ref).per_output["bbox_regression"].task is Task.EMBED
    assert score(Task.DETECT, ref, ref).per_output["face_probability"].task is Task.DETECT
