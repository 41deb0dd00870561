"""Every benchmark script's verdict logic, fed synthetic numbers: a missed target FAILs (exit 1),
noise, load or self-contradicting data give "inconclusive" (exit 3), never PASS. Pure: nothing
is measured here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

V = importlib.import_module("_verdict")
IDLE, BUSY = V.Load(0.3, 0.5, 2), V.Load(3.5, 4.2, 2)


def script(name):
    return importlib.import_module(name)


def verdict_of(rep, name_part):
    rows = [r for r in rep.rows if name_part in r.target.name and r.verdict is not None]
    assert rows, f"no judged row named like {name_part!r}: {[r.target.name for r in rep.rows]}"
    return rows[0].verdict


# ------------------------------------------------------------------ the shared rules
def test_judge_pass_fail_straddle_and_too_few_rounds():
    t = V.Target("p50", "<", 1.0, "s", load="up")
    assert V.judge(t, [0.5, 0.6, 0.7]).verdict is V.Verdict.PASS
    assert V.judge(t, [1.5, 1.6, 1.7]).verdict is V.Verdict.FAIL
    row = V.judge(t, [0.5, 0.9, 1.4])
    assert row.verdict is V.Verdict.INCONCLUSIVE and "straddles" in row.reason
    row = V.judge(t, [0.5])
    assert row.verdict is V.Verdict.INCONCLUSIVE and "too few" in row.reason
    assert V.judge(t, [], exact=True).verdict is V.Verdict.INCONCLUSIVE  # not measured is never PASS


def test_load_above_the_cores_refuses_what_load_could_explain():
    up = V.Target("latency", "<", 1.0, "s", load="up")
    assert V.judge(up, [0.2, 0.3, 0.4], load=BUSY).verdict is V.Verdict.PASS  # load only adds: a pass stands
    row = V.judge(up, [1.5, 1.6, 1.7], load=BUSY)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "load 4.20 above 2 cores" in row.reason
    ratio = V.Target("speedup", ">=", 2.0, "x")
    assert V.judge(ratio, [3.0, 3.1, 3.2], load=BUSY).verdict is V.Verdict.INCONCLUSIVE
    assert V.judge(ratio, [1.0, 1.1, 1.2], load=IDLE).verdict is V.Verdict.FAIL
    mem = V.Target("rss", "<=", 120, "MB", load="none")
    assert V.judge(mem, [130, 131, 132], load=BUSY).verdict is V.Verdict.FAIL
    assert V.judge(V.Target("failed", "<=", 0, load="none"), 1, exact=True, load=BUSY).verdict is V.Verdict.FAIL


def test_a_rate_load_can_only_lower_and_the_cpu_share_load_measure():
    rate = V.Target("msg/s", ">=", 1000, "msg/s", load="down")
    assert V.judge(rate, [5000] * 3, load=BUSY).verdict is V.Verdict.PASS      # a PASS under load stands
    row = V.judge(rate, [500] * 3, load=BUSY)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "load 4.20 above 2 cores" in row.reason
    busy_cpu = V.CpuLoad(foreign_cores=0.9, loadavg=1.0, cores=2)              # loadavg low, other work high
    row = V.judge(V.Target("ratio", ">=", 0.7), [0.9] * 3, load=busy_cpu)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "other processes used 0.90 cores" in row.reason
    assert "other processes 0.90 cores" in row.line()
    assert V.worst([IDLE, BUSY]).max == BUSY.max and V.worst([None]) is None


def test_sanity_checks_refuse_contradicting_data():
    assert V.slower_with_more_threads({1: 15.75e-3, 2: 27.1e-3}) is not None  # bench_headline's bad cell
    assert V.slower_with_more_threads({1: 15.75e-3, 2: 9.0e-3}) is None
    assert V.baseline_exceeds_bound(2.1, 1.9, what="bare") is not None
    assert V.baseline_exceeds_bound(1.9, 2.1) is None
    row = V.judge(V.Target("x", ">=", 2.0), [3.0, 3.1, 3.2], refuse=["data contradict"], load=IDLE)
    assert row.verdict is V.Verdict.INCONCLUSIVE


def test_exit_codes_and_summary():
    rep = V.Report()
    rep.judge(V.Target("a", "<", 1.0), [0.1, 0.2, 0.3])
    assert rep.exit_code() == 0
    rep.judge(V.Target("b", "<", 1.0), [0.1, 0.9, 1.5])
    assert rep.exit_code() == 3
    rep.judge(V.Target("c", "<", 1.0), [2.0, 2.1, 2.2])
    rep.info("d", [5.0, 6.0])
    assert rep.exit_code() == 1 and "1 PASS, 1 FAIL, 1 inconclusive" in rep.lines()[-1]
    assert all(("target" in r.line()) == (r.verdict is not None) for r in rep.rows)
    only_info = V.Report()
    only_info.info("d", [5.0])
    assert only_info.exit_code() == 3 and "nothing was judged" in only_info.lines()[-1]


def test_paired_ratio_interval_resolves_a_few_percent_under_drift():
    rng = np.random.default_rng(0)
    drift = np.linspace(1.0, 1.6, 300) * rng.lognormal(0, 0.05, 300)  # load changes a lot between rounds
    base = 2e-3 * drift
    cand = base * 1.03 * rng.lognormal(0, 0.01, 300)
    est, lo, hi = V.paired_ratio_ci(cand, base)
    assert lo < 0.03 < hi and hi - lo < 0.01


def test_open_loop_latency_counts_from_the_schedule():
    import time

    L = importlib.import_module("_load")

    def make():
        def call():
            time.sleep(0.05)  # every request stalls 50 ms: with one worker the queue grows
            return "ok"
        return call

    with L.OpenLoop(make, rate=100, workers=1, duration_s=0.2, start_delay_s=0.0) as load:
        load.wait()
    s = load.summary()
    assert s["requests"] == 20 and s["outcomes"] == {"ok": 20}
    # closed-loop timing would say 50 ms; from the schedule the last request waited ~0.8 s
    assert s["latency_ms"]["max"] > 500 and s["achieved_per_s"] < 50


# ------------------------------------------------------------------ each script
def test_agent_overhead():
    m = script("agent_overhead")
    bad = {"inproc": {"cpu": (0.078, 0.06, 0.10), "wall": (0.078, 0.05, 0.11)},
           "http": {"http.client": (1.6e-3, 1.5e-3, 1.7e-3)}, "rounds": 300}
    rep = m.verdicts(bad, load=IDLE)
    assert verdict_of(rep, "CPU time") is V.Verdict.FAIL and verdict_of(rep, "http.client") is V.Verdict.FAIL
    assert rep.exit_code() == 1
    noisy = {"inproc": {"cpu": (0.002, -0.034, 0.078), "wall": (0.002, -0.034, 0.078)}, "rounds": 3}
    assert m.verdicts(noisy, load=IDLE).exit_code() == 3  # +7.8% / +0.2% / -3.4%: cannot resolve 2%
    contradiction = {"inproc": {"cpu": (-0.10, -0.12, -0.08), "wall": (-0.10, -0.12, -0.08)}, "rounds": 300}
    rep = m.verdicts(contradiction, load=IDLE)
    assert verdict_of(rep, "CPU time") is V.Verdict.INCONCLUSIVE and "contradict" in rep.rows[0].reason
    good = {"inproc": {"cpu": (0.004, -0.003, 0.011), "wall": (0.004, -0.006, 0.014)}, "rounds": 300}
    assert m.verdicts(good, load=IDLE).exit_code() == 0
    assert m.verdicts(good, load=BUSY).exit_code() == 0  # load only adds to an overhead: a pass stands
    assert verdict_of(m.verdicts(bad, load=BUSY), "CPU time") is V.Verdict.INCONCLUSIVE  # a fail does not


def _mem_run(**kw):
    base = {"ready_s": 0.9, "rss_mb": 91.0, "uss_mb": 40.0, "bare_ready_s": 0.3, "bare_rss_mb": 71.0, "bare_uss_mb": 23.0}
    return base | kw


def test_agent_memory_startup():
    m = script("agent_memory_startup")
    assert m.verdicts([_mem_run()] * 3, load=IDLE).exit_code() == 0
    rep = m.verdicts([_mem_run(rss_mb=150.0)] * 3, load=BUSY)
    assert verdict_of(rep, "RSS") is V.Verdict.FAIL and rep.exit_code() == 1
    assert verdict_of(m.verdicts([_mem_run(ready_s=2.0)] * 3, load=IDLE), "ready") is V.Verdict.FAIL
    assert verdict_of(m.verdicts([_mem_run(ready_s=2.0)] * 3, load=BUSY), "ready") is V.Verdict.INCONCLUSIVE
    assert verdict_of(m.verdicts([_mem_run(bare_rss_mb=95.0)] * 3, load=IDLE), "RSS") is V.Verdict.INCONCLUSIVE
    assert m.verdicts([], load=IDLE).exit_code() == 3


def _rb_run(**kw):
    return {"failed": 0, "stale": 0, "switch_s": 0.02, "worst_latency_s": 0.03, "rollback_wall_s": 0.4,
            "first_old_s": 0.3, "p99_latency_s": 0.01, "achieved_per_s": 200.0} | kw


def test_agent_rollback_under_load():
    m = script("agent_rollback_under_load")
    assert m.verdicts([_rb_run()] * 3, load=IDLE).exit_code() == 0
    assert m.verdicts([_rb_run(), _rb_run(failed=2), _rb_run()], load=IDLE).exit_code() == 1
    assert verdict_of(m.verdicts([_rb_run(switch_s=1.4)] * 3, load=IDLE), "switch") is V.Verdict.FAIL
    rep = m.verdicts([_rb_run(worst_latency_s=2.5)] * 3, load=IDLE)  # a stall behind the switch
    assert verdict_of(rep, "worst request latency") is V.Verdict.FAIL
    assert verdict_of(m.verdicts([_rb_run(stale=1)] * 3, load=IDLE), "release-2") is V.Verdict.FAIL


def _ota_run(**kw):
    return {"verified_to_serving_s": 0.3, "fetch_to_serving_s": 0.5, "rollback_s": 0.02, "rollback_reason": "trial.latency",
            "serving_release_after": 2, "requests": 700, "failed": 0, "errors": [], "achieved_rate": 200.0,
            "p99_ms": 10.0, "worst_ms": 30.0} | kw


def test_ota_update_latency():
    m = script("ota_update_latency")
    assert m.verdicts([_ota_run()] * 3, load=IDLE).exit_code() == 0
    assert verdict_of(m.verdicts([_ota_run(verified_to_serving_s=3.0)] * 3, load=IDLE), "verified") is V.Verdict.FAIL
    assert verdict_of(m.verdicts([_ota_run(rollback_s=1.2)] * 3, load=IDLE), "rollback") is V.Verdict.FAIL
    assert m.verdicts([_ota_run(failed=1)] + [_ota_run()] * 2, load=IDLE).exit_code() == 1


def test_ota_unload_first():
    m = script("ota_unload_first")
    ok = {"outcome": "commit (ok)", "update_s": 0.7, "window_s": None, "ok": 200, "retry": 0, "failed": 0}
    cases = [("room for both", "refuse", "commit (ok)", [ok] * 3)]
    assert m.verdicts(cases, load=IDLE).exit_code() == 0
    wrong = [("one model only", "refuse", "failed (gate.memory)", [ok] * 3)]  # it should have refused
    assert m.verdicts(wrong, load=IDLE).exit_code() == 1
    dropped = [("room for both", "refuse", "commit (ok)", [ok | {"failed": 4}] * 3)]
    assert m.verdicts(dropped, load=IDLE).exit_code() == 1


def test_runtime_overhead():
    m = script("runtime_overhead")
    med = {"infer(dict)": 33e-6, "shared tensor": 17e-6, "Session.run": 25e-6}
    good = {"matmul": {"added_s": (9e-6, 8e-6, 10e-6), "rel": (0.5, 0.4, 0.6), "median_s": med, "rounds": 200},
            "conv": {"added_s": (10e-6, 8e-6, 12e-6), "rel": (0.02, 0.01, 0.03),
                     "median_s": {"infer(dict)": 600e-6, "shared tensor": 510e-6, "Session.run": 520e-6}, "rounds": 50}}
    assert m.verdicts(good, load=IDLE).exit_code() == 0
    bad = {**good, "matmul": {**good["matmul"], "added_s": (30e-6, 28e-6, 32e-6)}}
    assert verdict_of(m.verdicts(bad, load=IDLE), "matmul") is V.Verdict.FAIL
    bad = {**good, "conv": {**good["conv"], "added_s": (60e-6, 55e-6, 65e-6)}}
    assert m.verdicts(bad, load=IDLE).exit_code() == 1
    flipped = {**good, "conv": {**good["conv"], "median_s": {"infer(dict)": 1, "shared tensor": 600e-6,
                                                             "Session.run": 520e-6}}}
    assert verdict_of(m.verdicts(flipped, load=IDLE), "conv") is V.Verdict.INCONCLUSIVE


def _hl_cell(engine, precision, threads, trials_ms, hint=None):
    p50 = float(np.median(trials_ms)) / 1e3
    return {"engine": engine, "precision": precision, "precision_hint": hint, "threads": threads,
            "scenario": "single_stream", "status": "ok", "executed_precision": "int8" if "int8" in precision else "fp32",
            "trial_p50_s": [x / 1e3 for x in trials_ms], "stats": {"percentiles_s": {"p50": p50}}}


def _hl_result(fp32_2t_ms, int8_ms=(5.0, 5.1, 5.2)):
    cells = [_hl_cell("onnxruntime", "fp32", 1, (15.7, 15.8, 15.9)), _hl_cell("onnxruntime", "int8-static", 1, int8_ms),
             _hl_cell("onnxruntime", "fp32", 2, fp32_2t_ms), _hl_cell("onnxruntime", "int8-static", 2, (2.6, 2.7, 2.8))]
    return {"cells": cells}


def test_bench_headline():
    m = script("bench_headline")
    good = {"resnet18": (_hl_result((8.5, 8.6, 8.7)), IDLE)}
    assert m.verdicts(good).exit_code() == 0
    slow_int8 = {"resnet18": (_hl_result((8.5, 8.6, 8.7), int8_ms=(12.0, 12.2, 12.4)), IDLE)}
    rep = m.verdicts(slow_int8)
    assert verdict_of(rep, "1 thread") is V.Verdict.FAIL and rep.exit_code() == 1
    # main's "10.23x at 2 threads -> YES": the 2-thread fp32 cell ran slower than 1 thread
    contradicted = {"resnet18": (_hl_result((27.0, 27.1, 27.2)), IDLE)}
    rep = m.verdicts(contradicted)
    row = next(r for r in rep.rows if "2 thread" in r.target.name)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "2 threads slower than 1" in row.reason
    assert verdict_of(m.verdicts({"resnet18": (_hl_result((8.5, 8.6, 8.7)), BUSY)}), "1 thread") is V.Verdict.INCONCLUSIVE
    # the int8 build failed: its cells are errors, so the >= 2x target is "not measured", never a silent 0
    failed = _hl_result((8.5, 8.6, 8.7))
    for c in failed["cells"]:
        if c["precision"] == "int8-static":
            c["status"] = "error"
    rep = m.verdicts({"resnet18": (failed, IDLE)})
    assert rep.exit_code() == 3 and all(verdict_of(rep, f"{t} thread") is V.Verdict.INCONCLUSIVE for t in (1, 2))


def test_bench_fidelity():
    m = script("bench_fidelity")
    row = {"engine": "openvino", "reference": "openvino", "label": "ppocr openvino-int8", "executed": {}}
    ref = np.linspace(20e-3, 24e-3, 8)
    fine = m.verdicts([row | {"edgeship_s": ref * 1.04, "tool_s": ref}], load=IDLE)
    assert fine.exit_code() == 0
    slow = m.verdicts([row | {"edgeship_s": ref * 1.2, "tool_s": ref}], load=IDLE)
    assert slow.exit_code() == 1
    unmatched = m.verdicts([row | {"edgeship_s": ref, "tool_s": ref * 2.0}], load=IDLE)  # bf16 vs f32: +99.8%
    assert unmatched.exit_code() == 3 and "contradict" in unmatched.rows[0].reason
    assert m.verdicts([row | {"edgeship_s": ref * 1.04, "tool_s": ref}], load=BUSY).exit_code() == 3
    inproc = row | {"reference": "openvino-inprocess"}  # one process: load only adds to edgeship's side
    assert m.verdicts([inproc | {"edgeship_s": ref * 1.04, "tool_s": ref}], load=BUSY).exit_code() == 0
    assert m.verdicts([inproc | {"edgeship_s": ref * 1.2, "tool_s": ref}], load=BUSY).exit_code() == 3


def test_oip_overhead():
    m = script("oip_overhead")

    def rows(binary_added):
        return {("image", "HTTP JSON"): [(0.31, 0.30)] * 3, ("image", "HTTP binary"): [(0.01, a) for a in binary_added]}
    assert m.verdicts(rows([0.007, 0.006, 0.008]), load=IDLE).exit_code() == 0
    assert m.verdicts(rows([0.2, 0.21, 0.22]), load=IDLE).exit_code() == 1  # binary as slow as JSON
    assert m.verdicts(rows([0.05, 0.09, 0.2]), load=IDLE).exit_code() == 3  # the rounds disagree
    assert m.verdicts({}, load=IDLE).exit_code() == 3  # not measured is never PASS


def test_agent_slowloris():
    m = script("agent_slowloris")
    good = [(0.5e-3, 0.45e-3, 0, 2000, 0)] * 3
    assert m.verdicts(good, load=IDLE).exit_code() == 0
    assert m.verdicts([(0.5e-3, 0.45e-3, 3, 2000, 0)] + good[1:], load=IDLE).exit_code() == 1
    slow = [(0.5e-3, 2.0e-3, 0, 2000, 0)] * 3
    assert m.verdicts(slow, load=IDLE).exit_code() == 1 and m.verdicts(slow, load=BUSY).exit_code() == 3
