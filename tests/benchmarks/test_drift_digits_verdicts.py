"""The verdict logic of benchmarks/drift_digits.py on synthetic figures, by the shared rules
(benchmarks/_verdict.py): a false alarm, an alarm before the shift or a shift detected late
(or never) FAILs whatever the load (exact counts); the cost is a ratio: it FAILs or PASSes by
the interval of the blocks' median, and gets no verdict under load; a run that carries no
cost target only prints it. No agent, no timing."""

from __future__ import annotations

import math
import sys

from benchhelpers import load_bench

drift = load_bench("drift_digits")
V = sys.modules["_verdict"]
IDLE, BUSY = V.Load(0.5, 0.9, 2), V.Load(3.5, 4.2, 2)
SHIFTS = ("shifted 2 px", "rotated 90 deg", "inverted", "class mix 0-2 only")


def _run(*, false_alarms=0, early=0, first=(400, 300, 400, 400), cost=0.012, spread=0.001, judged=True,
         label="defaults"):
    return drift.RunFigures(label, 10_000, false_alarms, early={s: (early if i == 0 else 0) for i, s in enumerate(SHIFTS)},
                            first_alarm=dict(zip(SHIFTS, first)),
                            cost=[cost - spread, cost, cost + spread] * 10, request_share=[0.003] * 30,
                            cost_judged=judged)


def _row(report, name_part):
    return next(r for r in report.rows if name_part in r.target.name)


def test_clean_figures_pass_and_the_lines_name_target_spread_and_load():
    rep = drift.verdicts([_run()], load=IDLE)
    assert rep.exit_code() == 0
    assert all(r.verdict is V.Verdict.PASS for r in rep.rows if r.verdict is not None)
    cost = _row(rep, "drift cost").line()
    assert cost.startswith("PASS") and "1.20 %" in cost and "(30 rounds)" in cost and "target < 2.00 %" in cost
    assert "load 0.50 (max 0.90) on 2 cores" in cost
    assert _row(rep, "inverted").line().split()[0] == "PASS" and "target <= 500 requests" in _row(rep, "inverted").line()
    assert _row(rep, "request thread alone").verdict is None  # printed, not judged
    assert rep.lines()[-1].endswith("(exit 0)")


def test_a_false_alarm_an_early_alarm_or_a_late_or_missing_detection_fails_even_under_load():
    for bad, part in ((_run(false_alarms=1), "false alarms"), (_run(early=2), "before each shift"),
                      (_run(first=(400, 501, 400, 400)), "rotated"), (_run(first=(400, 300, None, 400)), "inverted")):
        for load in (IDLE, BUSY):
            rep = drift.verdicts([bad], load=load)
            row = _row(rep, part)
            assert row.verdict is V.Verdict.FAIL and rep.exit_code() == 1, (part, load)
    missing = _row(drift.verdicts([_run(first=(400, 300, None, 400))], load=IDLE), "inverted")
    assert math.isinf(missing.values[0]) and "no alarm in 2000 shifted requests" in missing.line()
    edge = drift.verdicts([_run(first=(500, 500, 500, 500))], load=IDLE)  # "within 500" includes 500
    assert edge.exit_code() == 0


def test_the_cost_fails_over_target_straddles_inconclusive_and_has_no_verdict_under_load():
    over = drift.verdicts([_run(cost=0.05)], load=IDLE)
    assert _row(over, "drift cost").verdict is V.Verdict.FAIL and over.exit_code() == 1
    straddle = drift.verdicts([_run(cost=0.02, spread=0.004)], load=IDLE)
    row = _row(straddle, "drift cost")
    assert row.verdict is V.Verdict.INCONCLUSIVE and "straddles" in row.reason and straddle.exit_code() == 3
    for cost in (0.01, 0.05):  # a ratio: load can move it both ways, so neither verdict stands
        busy = _row(drift.verdicts([_run(cost=cost)], load=BUSY), "drift cost")
        assert busy.verdict is V.Verdict.INCONCLUSIVE and "load 4.20 above 2 cores" in busy.reason


def test_a_run_without_the_cost_target_prints_its_cost_and_is_judged_on_its_counts():
    info_only = _run(cost=0.2, judged=False, label="every request sketched")
    rep = drift.verdicts([_run(), info_only], load=IDLE)
    assert _row(rep, "every request sketched: drift cost").verdict is None and rep.exit_code() == 0
    assert "20.00 %" in _row(rep, "every request sketched: drift cost").line()
    late = drift.verdicts([_run(), _run(first=(900, 300, 400, 400), judged=False, label="every request")], load=IDLE)
    assert late.exit_code() == 1


def test_the_budget_run_judges_its_cost_and_prints_its_detection_in_requests_and_time():
    budget = drift.RunFigures("max_cost_share = 0.02", 50_000, 0, early={s: 0 for s in SHIFTS},
                              first_alarm=dict(zip(SHIFTS, (6400, 7000, None, 6400))),
                              cost=[0.012, 0.013, 0.014] * 10, request_share=[0.005] * 30, detect_judged=False,
                              shifted_limit=10_000, p50_s=30e-6, schedule="1 request in 32 sketched")
    rep = drift.verdicts([_run(), budget], load=IDLE)
    assert rep.exit_code() == 0  # late detection under the budget is printed, not a miss of the defaults' target
    shifted = _row(rep, "max_cost_share = 0.02: shifted 2 px")
    assert shifted.verdict is None and "192 ms of traffic at p50" in shifted.line()
    assert "1 request in 32 sketched" in shifted.line()
    assert "no alarm in 10000 shifted requests" in _row(rep, "max_cost_share = 0.02: inverted").line()
    assert _row(rep, "max_cost_share = 0.02: drift cost").verdict is V.Verdict.PASS
    over = drift.verdicts([_run(), drift.RunFigures(**{**budget.__dict__, "cost": [0.03] * 30})], load=IDLE)
    assert _row(over, "max_cost_share = 0.02: drift cost").verdict is V.Verdict.FAIL
    assert _row(drift.verdicts([drift.RunFigures(**{**budget.__dict__, "false_alarms": 1})], load=IDLE),
                "false alarms").verdict is V.Verdict.FAIL
