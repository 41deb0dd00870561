"""The verdict logic of benchmarks/fleet_rollout.py, fleet_breach.py, fleet_status.py and
compile_figures.py on synthetic figures, by the shared rules (benchmarks/_verdict.py): a miss or a broken round
FAILs (exit 1), a FAIL under load or too few rounds is "inconclusive" (exit 3), a duration
that passes under load stands. No broker, no timing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchmod import load_bench as _load  # noqa: E402

rollout, breach, status = _load("fleet_rollout"), _load("fleet_breach"), _load("fleet_status")
V = sys.modules["_verdict"]
IDLE, BUSY = V.Load(0.4, 0.8, 2), V.Load(3.1, 4.0, 2)


def _rollout(e2e, msgs, *, incomplete=0, load=IDLE):
    return rollout.verdicts(e2e=e2e, overhead=[x - 30 for x in e2e], per_device=msgs,
                            metrics_per_device=[15.0] * len(e2e), incomplete=incomplete, load=load)


def _row(report, target):
    return next(r for r in report.rows if r.target == target)


def test_rollout_passes_clean_figures_and_fails_a_miss_or_an_incomplete_rollout():
    assert _rollout([41.0, 42.5, 40.8], [6.1, 6.0, 6.2]).exit_code() == 0
    over = _rollout([41.0, 42.5, 40.8], [16.0, 16.2, 16.1])
    assert _row(over, rollout.MSGS).verdict is V.Verdict.FAIL and over.exit_code() == 1
    broken = _rollout([41.0, 42.5, 40.8], [6.1, 6.0, 6.2], incomplete=1)
    assert _row(broken, rollout.INCOMPLETE).verdict is V.Verdict.FAIL and broken.exit_code() == 1


def test_rollout_under_load_a_slow_rollout_is_inconclusive_a_fast_one_stands():
    slow = _rollout([65.0, 70.0, 66.0], [6.0] * 3, load=BUSY)
    row = _row(slow, rollout.E2E)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "load 4.00 above 2 cores" in row.reason
    assert slow.exit_code() == 3
    fast = _rollout([41.0, 42.0, 43.0], [6.0] * 3, load=BUSY)
    assert _row(fast, rollout.E2E).verdict is V.Verdict.PASS
    assert _row(_rollout([41.0, 42.0, 43.0], [16.0] * 3, load=BUSY), rollout.MSGS).verdict is V.Verdict.FAIL


def test_breach_needs_three_rounds_and_every_round_seen():
    ok = breach.verdicts(lat=[0.4, 0.5, 0.6], model_lat=[12.0], unseen=0, load=IDLE)
    assert ok.exit_code() == 0 and any(r.verdict is None for r in ok.rows)      # the latency row is info
    few = breach.verdicts(lat=[0.4, 0.5], model_lat=[], unseen=0, load=IDLE)
    assert _row(few, breach.PAUSE).verdict is V.Verdict.INCONCLUSIVE and few.exit_code() == 3
    lost = breach.verdicts(lat=[0.4, 0.5, 0.6], model_lat=[], unseen=2, load=IDLE)
    assert lost.exit_code() == 1
    straddle = breach.verdicts(lat=[0.4, 2.5, 0.6], model_lat=[], unseen=0, load=IDLE)
    assert "straddles" in _row(straddle, breach.PAUSE).reason


def test_status_lines_name_the_target_the_spread_and_the_load():
    rep = status.verdicts(times=[1.1, 1.3, 1.2, 1.25, 1.15], table_s=[1.4], short=0, load=IDLE)
    assert rep.exit_code() == 0
    line = _row(rep, status.STATUS).line()
    assert line.startswith("PASS") and "[1.1 .. 1.3] (5 rounds)" in line and "target < 2 s" in line
    assert "load 0.40 (max 0.80) on 2 cores" in line
    assert rep.lines()[-1].endswith("(exit 0)")
    assert status.verdicts(times=[3.0] * 3, table_s=[3.2], short=0, load=IDLE).exit_code() == 1
    assert status.verdicts(times=[1.0] * 3, table_s=[1.2], short=1, load=IDLE).exit_code() == 1


def test_compile_figures_are_exact_rows_and_a_missing_figure_is_a_miss():
    figs = _load("compile_figures")
    good = {"drop_onnxruntime": 0.2, "drop_openvino": 0.0, "drop_tflite": 0.4, "size_ratio": 3.9}
    assert figs.verdicts(good).exit_code() == 0
    assert figs.verdicts(good | {"drop_tflite": 1.3}).exit_code() == 1
    assert figs.verdicts(good | {"size_ratio": 3.2}).exit_code() == 1
    missing = figs.verdicts(good | {"drop_openvino": None})
    assert missing.exit_code() == 1 and missing.rows[0].verdict is V.Verdict.FAIL
    assert "pts" in missing.rows[1].line() and "target <= 1.00 pts" in missing.rows[1].line()


def _cell(p50_ms, lo_ms, hi_ms):
    return {"status": "ok", "stats": {"percentiles_s": {"p50": p50_ms / 1e3}, "ci_s": {"p50": [lo_ms / 1e3, hi_ms / 1e3]}}}


def _minilm(cos=0.995):
    arts = [{"id": f"{e}-int8", "engine": e, "precision": "int8", "status": "ok",
             "verification": {"cosine_min": cos}} for e in ("onnxruntime", "openvino")]
    return {"artifacts": arts}


def test_real_models_minilm_goals_by_the_shared_rules():
    rm = _load("real_models")
    fast = {f"{e}-{p}": {1: _cell(*v)} for e in ("onnxruntime", "openvino")
            for p, v in (("fp32", (10.0, 9.8, 10.2)), ("int8", (4.0, 3.9, 4.1)))}
    rows = rm.minilm_verdicts(_minilm(), fast, load=IDLE)
    assert V.exit_code(rows) == 0 and len(rows) == 5
    assert V.exit_code(rm.minilm_verdicts(_minilm(cos=0.98), fast, load=IDLE)) == 1
    assert V.exit_code(rm.minilm_verdicts(_minilm(), fast, load=BUSY)) == 3       # a ratio under load
    straddle = dict(fast, **{"openvino-int8": {1: _cell(5.9, 5.0, 7.0)}})        # CI [1.40 .. 2.04]
    row = next(r for r in rm.minilm_verdicts(_minilm(), straddle, load=IDLE) if "openvino int8 speedup" in r.target.name)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "straddles" in row.reason
    gone = {"artifacts": [{"id": "onnxruntime-int8", "status": "failed", "error": "QuantError: op X"}]}
    assert V.exit_code(rm.minilm_verdicts(gone, {}, load=IDLE)) == 1
    bare = rm.coverage_verdict({"m": {"artifacts": [{"id": "m-int8", "precision": "int8", "status": "failed",
                                                      "error": "AssertionError"}]}})
    assert bare.verdict is V.Verdict.FAIL and "bare reasons" in bare.line()
