"""Each model is judged by its task's fidelity metric: the compile side's fidelity block when the
manifest has one, else the metric inferred from the IO; top-1 agreement of a non-classifier is
never shown as an accuracy drop; gate-failed artifacts are never ranked; compare says when the
machine, not the model, may explain a difference."""

from __future__ import annotations

import copy

import numpy as np

from runtime.bench.stats import summarize
from toolchain.bench import analysis, compare, fidelity, report_md, result as result_mod


def _manifest(outputs, inputs, *, labels=False, task=None):
    m = {"io": {"inputs": inputs, "outputs": outputs}, "validation": {"labels": labels}, "model": {"name": "m"}}
    if task:
        m["model"]["metadata"] = {"task": task}
    return m


MINILM_IO = dict(outputs=[{"name": "div_1", "dtype": "float32", "shape": ["batch", 384]}],
                 inputs=[{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
                         {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]}])
#: what `edgeship compile` on main recorded for MiniLM int8: argmax of an embedding agrees 56%
LEGACY_MINILM = {"top1_agreement": 0.5625, "cosine_min": 0.987, "accuracy_drop_pts": None, "accuracy": None,
                 "passed": True, "tolerances": {"min_cosine": 0.98}}


def test_task_inference_from_the_io():
    assert fidelity.task_of(_manifest(**MINILM_IO)) == ("embed", False)
    image = dict(outputs=[{"name": "logits", "dtype": "float32", "shape": ["N", 10]}],
                 inputs=[{"name": "x", "dtype": "float32", "shape": ["N", 3, 32, 32]}])
    assert fidelity.task_of(_manifest(**image)) == ("classify", False)
    assert fidelity.task_of(_manifest(**image, labels=True)) == ("classify", False)
    named = dict(outputs=[{"name": "sentence_embedding", "dtype": "float32", "shape": ["N", 8]}], inputs=[])
    assert fidelity.task_of(_manifest(**named)) == ("embed", False)
    dense = dict(outputs=[{"name": "maps", "dtype": "float32", "shape": ["N", 1, "H", "W"]}], inputs=[])
    assert fidelity.task_of(_manifest(**dense)) == ("detect", False)
    assert fidelity.task_of(_manifest(**MINILM_IO, task="regress")) == ("regress", True)
    assert fidelity.task_of(_manifest(**image), {"task": "embed"}) == ("embed", True)


def test_an_embedding_is_never_judged_by_top1_or_called_an_accuracy_drop():
    task, _ = fidelity.task_of(_manifest(**MINILM_IO))
    f = fidelity.from_verification(LEGACY_MINILM, task=task)
    assert f.metric is fidelity.Metric.COSINE_MIN and f.value == 0.987 and f.drop_pts is None
    assert f.text() == "min cosine 0.9870" and f.budget == 0.98 and f.source == "legacy"
    cell = _cell("onnxruntime-int8-dynamic", 1e-3, fid=f)
    rec = analysis.recommend([cell], max_drop_pts=1.0, device_name="CPU")
    assert rec["best"]["artifact_id"] == "onnxruntime-int8-dynamic"  # not rejected for 43.75 pts of top-1
    assert rec["metric"] == "cosine_min" and rec["budget_applies"] is False
    res = _result([cell], analysis_={"speedups": {}, "recommendation": rec, "notes": []})
    md = report_md.render(res)
    assert "43.75" not in md and "top-1" not in md and "accuracy drop" not in md.split("## Results")[1]
    assert "min cosine 0.9870" in md and "judged by the build's gate" in md


def test_contract_block_wins_over_raw_figures():
    ver = dict(LEGACY_MINILM, task="embed", fidelity={
        "metric": "cosine_min", "value": 0.993, "higher_is_better": True, "budget": 0.99, "passed": True,
        "per_output": {"div_1": {"metric": "cosine_min", "value": 0.993}}})
    f = fidelity.from_verification(ver, task="classify")
    assert (f.metric, f.value, f.budget, f.passed, f.source) == (fidelity.Metric.COSINE_MIN, 0.993, 0.99, True,
                                                                 "manifest")
    psnr = fidelity.from_verification({"fidelity": {"metric": "psnr_db", "value": 41.2, "higher_is_better": True,
                                                    "budget": 30.0, "passed": True}}, task=None)
    assert psnr.text() == "PSNR 41.2 dB" and psnr.loss == -41.2
    rel = fidelity.from_verification({"fidelity": {"metric": "rel_max_abs", "value": 0.004, "higher_is_better": False,
                                                   "budget": 0.01, "passed": True}}, task=None)
    assert rel.loss == 0.004 and rel.drop_pts is None


def test_classifier_without_labels_uses_top1_agreement_named_as_such():
    f = fidelity.from_verification({"top1_agreement": 0.97, "cosine_min": 0.99, "passed": True}, task="classify")
    assert f.metric is fidelity.Metric.TOP1_AGREEMENT and f.text() == "top-1 agreement 97.00%"
    assert abs(f.drop_pts - 3.0) < 1e-9
    rec = analysis.recommend([_cell("a", 1e-3, fid=f)], max_drop_pts=1.0, device_name="CPU")
    assert rec["best"] is None and "top-1 disagreement with fp32 3.00 pts > budget" in rec["excluded"][0]["reason"]


def test_gate_failed_never_recommended_even_when_fastest():
    good = fidelity.Fidelity(fidelity.Metric.COSINE_MIN, 0.999, True, 0.99, True)
    bad = fidelity.Fidelity(fidelity.Metric.COSINE_MIN, 0.011, True, 0.99, False)
    cells = [_cell("fast-but-broken", 1e-3, fid=bad), _cell("slow-and-good", 5e-3, fid=good)]
    rec = analysis.recommend(cells, max_drop_pts=None, device_name="CPU")
    assert rec["best"]["artifact_id"] == "slow-and-good"
    assert rec["excluded"][0]["key"].startswith("fast-but-broken") and "min cosine 0.0110" in rec["excluded"][0]["reason"]


# ------------------------------------------------------------------ compare
def _cell(aid, center, *, fid=None, gate_failed=False, load=None, seed=0):
    samples = np.random.default_rng(seed).normal(center, center * 0.02, 1000).clip(min=center / 2)
    return {"key": f"{aid}__b1_t1_s1", "artifact_id": aid, "engine": "onnxruntime", "precision": "int8",
            "scenario": "single_stream", "batch": 1, "threads": 1, "streams": 1, "status": "ok", "trials": [],
            "errors": [], "stats": summarize(samples).to_json(), "fidelity": fid.to_json() if fid else None,
            "gate_failed": gate_failed, "load_avg_max": load, "load_s": 0.1, "first_inference_s": 0.01}


def _result(cells, *, env=None, analysis_=None):
    from toolchain.bench.plan import BenchConfig

    return result_mod.new_result(source={"kind": "build", "path": "b", "model": {"name": "m"}},
                                 settings=BenchConfig().to_json(),
                                 environment=env or {"cpu_model": "X", "logical_cpus": 2},
                                 targets=[], cells=cells, order=[c["key"] for c in cells],
                                 analysis=analysis_ or {})


def test_compare_warns_when_the_load_differs():
    old = _result([_cell("a", 10e-3, load=7.4)])
    new = _result([_cell("a", 8e-3, load=3.3, seed=1)])
    cmp = compare.compare(old, new)
    assert cmp["load"]["differs"] and cmp["machine_warning"]
    text = compare.format_comparison(cmp)
    assert "load average differed" in text and "may be the machine" in text
    quiet = compare.compare(_result([_cell("a", 10e-3, load=0.2)]), _result([_cell("a", 10e-3, load=0.4, seed=1)]))
    assert not quiet["load"]["differs"] and not quiet["machine_warning"]


def test_compare_warns_when_the_fingerprint_differs():
    env_a = {"cpu_model": "X", "logical_cpus": 2, "isa_x86": {"avx512_vnni": True, "amx_int8": False},
             "engines": {"onnxruntime": "1.32.0"}}
    env_b = copy.deepcopy(env_a)
    env_b["isa_x86"]["amx_int8"] = True
    env_b["engines"]["onnxruntime"] = "1.33.0"
    cmp = compare.compare(_result([_cell("a", 1e-3)], env=env_a), _result([_cell("a", 1e-3, seed=2)], env=env_b))
    assert cmp["environment_changes"] == {"isa_x86.amx_int8": [False, True], "engines.onnxruntime": ["1.32.0", "1.33.0"]}
    assert "fingerprints differ" in compare.format_comparison(cmp)


def test_compare_uses_the_fidelity_metric_and_flags_a_newly_failed_gate():
    f_old = fidelity.Fidelity(fidelity.Metric.COSINE_MIN, 0.995, True, 0.99, True)
    f_new = fidelity.Fidelity(fidelity.Metric.COSINE_MIN, 0.95, True, 0.99, False)
    cmp = compare.compare(_result([_cell("a", 1e-3, fid=f_old)]), _result([_cell("a", 1e-3, fid=f_new, seed=1)]))
    assert cmp["fidelity"]["newly_failed"] == ["a__b1_t1_s1"] and cmp["regressed"]
    row = cmp["fidelity"]["changes"][0]
    assert row["old"] == "min cosine 0.9950" and row["new"] == "min cosine 0.9500" and row["worse"]
    assert "GATE NEWLY FAILED" in compare.format_comparison(cmp)
    same = compare.compare(_result([_cell("a", 1e-3, fid=f_old)]), _result([_cell("a", 1e-3, fid=f_old, seed=1)]))
    assert not same["fidelity"]["changes"] and not same["regressed"]
