"""The verdict logic of benchmarks/capture_pull.py on synthetic figures, by the shared rules
(benchmarks/_verdict.py): throughput is printed, never judged (no target in issue 16); a
capture missing, duplicated or left on the device FAILs (exit 1) whatever the load. No agent,
no broker, no timing."""

from __future__ import annotations

import sys

from benchhelpers import load_bench

pull = load_bench("capture_pull")
V = sys.modules["_verdict"]
IDLE, BUSY = V.Load(0.4, 0.8, 2), V.Load(5.0, 6.0, 2)


def _res(name="MQTT chunks (96 KiB)", *, expected=40, received=40, verified=40, left=0, mb_s=1.45):
    return {"name": name, "expected": expected, "received": received, "verified": verified, "left": left,
            "mb_s": mb_s}


def _row(report, target):
    return next(r for r in report.rows if r.target == target)


def test_a_clean_pull_passes_and_throughput_is_information_only():
    rep = pull.verdicts([_res(), _res("HTTP PUT (object store)", mb_s=0.8)], load=IDLE)
    assert rep.exit_code() == 0
    info = [r for r in rep.rows if r.verdict is None]
    assert [r.target.name for r in info] == ["pull throughput, MQTT chunks (96 KiB)",
                                             "pull throughput, HTTP PUT (object store)"]
    assert info[1].line().startswith("info") and "0.80 MB/s" in info[1].line() and "no target" in info[1].line()
    assert _row(rep, pull.NOT_ONCE).line().startswith("PASS")


def test_missing_duplicated_or_left_captures_fail_even_under_load():
    missing = pull.verdicts([_res(verified=39)], load=BUSY)
    assert _row(missing, pull.NOT_ONCE).verdict is V.Verdict.FAIL and missing.exit_code() == 1
    duplicated = pull.verdicts([_res(received=41)], load=IDLE)   # a file written twice
    assert _row(duplicated, pull.NOT_ONCE).median == 1 and duplicated.exit_code() == 1
    left = pull.verdicts([_res(), _res("HTTP", left=2)], load=IDLE)
    assert _row(left, pull.LEFT).verdict is V.Verdict.FAIL and _row(left, pull.NOT_ONCE).verdict is V.Verdict.PASS
    slow = pull.verdicts([_res(mb_s=0.01)], load=BUSY)           # slow under load: still only information
    assert slow.exit_code() == 0


def test_no_pull_measured_is_not_a_pass():
    rep = pull.verdicts([], load=IDLE)
    row = _row(rep, pull.NOT_ONCE)
    assert row.verdict is V.Verdict.INCONCLUSIVE and row.reason == "not measured" and rep.exit_code() == 3
    nan = pull.verdicts([_res(mb_s=float("nan"))], load=IDLE)   # a rate that could not be computed: shown, not judged
    assert "n/a MB/s" in nan.rows[0].line() and nan.exit_code() == 0
