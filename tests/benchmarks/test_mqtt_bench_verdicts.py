"""The verdict logic of benchmarks/mqtt_throughput.py and benchmarks/mqtt_outage.py on
synthetic figures: a miss FAILs (exit 1), noise or load gives "inconclusive" (exit 3), and
only clean figures that meet every target PASS (exit 0). No broker, no timing."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from benchmod import load_bench as _load  # noqa: E402

tput = _load("mqtt_throughput")
outage = _load("mqtt_outage")
verdict = sys.modules["_verdict"]  # the shared rules both scripts imported
IDLE = verdict.CpuLoad(foreign_cores=0.05, loadavg=2.1, cores=2)
BUSY = verdict.CpuLoad(foreign_cores=1.2, loadavg=4.5, cores=2)


def rounds(side, rates, *, lost=0, load=IDLE):
    return [tput.RoundResult(side, 20000, lost, 0, r, r, 50.0, load, 300.0, 250.0) for r in rates]


def tput_rows(raw, stage, enq):
    return {r.target.name: r for r in tput.verdicts({"raw": raw, "stage": stage, "enqueue": enq})}


def by_target(rows, key):
    return rows[tput.TARGETS[key].name]


def test_throughput_passes_clean_numbers_that_meet_every_target():
    rows = tput_rows(rounds("raw", [8000, 8200, 7900]), rounds("stage", [7000, 7100, 6900]),
                     rounds("enqueue", [6000, 6200, 6100]))
    assert by_target(rows, "ratio_stage").verdict is verdict.Verdict.PASS
    assert verdict.exit_code(list(rows.values())) == 0


def test_throughput_fails_a_ratio_below_target_and_any_lost_message():
    rows = tput_rows(rounds("raw", [8000, 8000, 8000]), rounds("stage", [4000, 4100, 3900], lost=1),
                     rounds("enqueue", [6000, 6000, 6000]))
    assert by_target(rows, "ratio_stage").verdict is verdict.Verdict.FAIL
    assert by_target(rows, "lost").verdict is verdict.Verdict.FAIL
    assert verdict.exit_code(list(rows.values())) == 1
    slow = tput_rows(rounds("raw", [8000] * 3), rounds("stage", [7000] * 3), rounds("enqueue", [900] * 3))
    assert by_target(slow, "rate").verdict is verdict.Verdict.FAIL      # issue 6: >= 1,000 msg/s


@pytest.mark.parametrize("case", ["straddles", "load", "too_few", "faster_than_bound", "raw_lost"])
def test_throughput_is_inconclusive_when_noise_could_decide(case):
    raw, stage = rounds("raw", [8000] * 3), rounds("stage", [7000] * 3)
    if case == "straddles":
        stage = rounds("stage", [7000, 5000, 6800])
    elif case == "load":
        stage = rounds("stage", [7000] * 3, load=BUSY)
    elif case == "too_few":
        raw, stage = raw[:2], stage[:2]
    elif case == "faster_than_bound":
        stage = rounds("stage", [7000, 9500, 7000])      # edgeship can't beat raw paho by 19%
    else:
        raw = rounds("raw", [8000] * 3, lost=5)
    rows = tput_rows(raw, stage, rounds("enqueue", [7000] * len(raw)))
    row = by_target(rows, "ratio_stage")
    assert row.verdict is verdict.Verdict.INCONCLUSIVE and row.reason
    assert verdict.exit_code(list(rows.values())) == 3
    assert "inconclusive" in row.line() and "reason:" in row.line()


def test_a_rate_that_passes_under_load_stands_one_that_fails_does_not():
    target = tput.TARGETS["rate"]
    assert target.load == "down"                          # load can only lower a rate
    ok = verdict.judge(target, [5000] * 3, load=BUSY)
    bad = verdict.judge(target, [500] * 3, load=BUSY)
    assert ok.verdict is verdict.Verdict.PASS and bad.verdict is verdict.Verdict.INCONCLUSIVE
    assert "other processes used 1.20 cores" in bad.reason
    ratio = verdict.judge(tput.TARGETS["ratio_stage"], [0.9] * 3, load=BUSY)
    assert ratio.verdict is verdict.Verdict.INCONCLUSIVE     # a ratio gets no verdict under load


def test_a_figure_over_rounds_takes_its_busiest_round_and_refuses_mixed_monitors():
    w = verdict.worst([IDLE, BUSY, IDLE])
    assert w.foreign_cores == BUSY.foreign_cores and w.loadavg == BUSY.loadavg
    with pytest.raises(TypeError):
        verdict.worst([IDLE, verdict.Load(0.3, 0.5, 2)])


GOOD = outage.OutageFigures(queued_first=900, queued_second=1000, on_disk_at_kill=700, lost_at_kill=0,
                            depth_at_broker_start=1400, at_consumer=1900, missing=0, duplicates=2, hist=1500,
                            served=3000, served_offline=2900, failed=0, backlog=1400, reconnect_s=1.2, drain_s=3.0,
                            loadavg=(5.0, 6.0))


@pytest.mark.parametrize("change", [{"lost_at_kill": 1}, {"missing": 3}, {"failed": 1}])
def test_outage_fails_on_any_lost_message_or_failed_request(change):
    assert verdict.exit_code(outage.verdicts(GOOD)) == 0
    rows = outage.verdicts(replace(GOOD, **change))
    assert verdict.exit_code(rows) == 1
    assert sum(r.verdict is verdict.Verdict.FAIL for r in rows) == 1
