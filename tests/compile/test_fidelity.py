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
