"""The verdict logic of benchmarks/metrics_scrape.py and fleet_exporter.py on synthetic figures,
by the shared rules (benchmarks/_verdict.py): a miss FAILs (exit 1), a tail the trivial route
shares or a figure without an interval is "inconclusive" (exit 3), a latency that passes under
load stands, a slowdown gets no verdict under load. No agent, no broker, no timing."""

from __future__ import annotations

import random
import sys

from benchhelpers import load_bench

scrape, exporter = load_bench("metrics_scrape"), load_bench("fleet_exporter")
V = sys.modules["_verdict"]
IDLE, BUSY = V.Load(0.4, 0.8, 2), V.Load(3.1, 4.0, 2)


def _row(report, target):
    return next(r for r in report.rows if r.target == target)


def _times(rng, n, ms, tail_ms=None, tail_share=0.0):
    return [((tail_ms if tail_ms is not None and rng.random() < tail_share else ms) + rng.random() * 0.2) / 1e3 for _ in range(n)]


def _scrape(*, scrape_ms=1.5, tail_ms=None, tail_share=0.0, live_tail_ms=None, b_over_a=1.0, failed=0, load=IDLE):
    rng = random.Random(3)
    a = [2.0e-3 * (1 + 0.01 * i) for i in range(5)]
    return scrape.verdicts(failed=failed, scrape_s=_times(rng, 150, scrape_ms, tail_ms, tail_share),
                           live_s=_times(rng, 150, 0.4, live_tail_ms, tail_share), a_p50_s=a,
                           b_p50_s=[x * b_over_a * (1 + 0.005 * (-1) ** i) for i, x in enumerate(a)], load=load)


def test_metrics_scrape_passes_fast_scrapes_and_fails_slow_ones_or_slowed_inference():
    ok = _scrape()
    assert ok.exit_code() == 0 and _row(ok, scrape.SCRAPE).verdict is V.Verdict.PASS
    assert any(r.verdict is None for r in ok.rows)                       # the trivial route: info
    slow = _scrape(scrape_ms=9.0)
    assert _row(slow, scrape.SCRAPE).verdict is V.Verdict.FAIL and slow.exit_code() == 1
    slowed = _scrape(b_over_a=1.2)
    assert _row(slowed, scrape.SLOWDOWN).verdict is V.Verdict.FAIL and slowed.exit_code() == 1
    assert _scrape(failed=2).exit_code() == 1


def test_metrics_scrape_a_tail_the_trivial_route_shares_is_inconclusive():
    shared = _scrape(tail_ms=12.0, tail_share=0.2, live_tail_ms=11.0)
    row = _row(shared, scrape.SCRAPE)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "trivial route" in row.reason and shared.exit_code() == 3
    own = _scrape(tail_ms=12.0, tail_share=0.2)                          # only the scrapes are slow
    assert _row(own, scrape.SCRAPE).verdict is V.Verdict.FAIL


def test_metrics_scrape_under_load():
    busy = _scrape(load=BUSY)
    assert _row(busy, scrape.SCRAPE).verdict is V.Verdict.PASS          # a fast scrape under load stands
    row = _row(busy, scrape.SLOWDOWN)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "load" in row.reason and busy.exit_code() == 3
    assert _row(_scrape(scrape_ms=9.0, load=BUSY), scrape.SCRAPE).verdict is V.Verdict.INCONCLUSIVE


def test_metrics_scrape_without_pairs_or_scrapes_is_not_measured():
    rep = scrape.verdicts(failed=0, scrape_s=[], live_s=[], a_p50_s=[2e-3], b_p50_s=[2e-3], load=IDLE)
    assert {_row(rep, t).reason.split(":")[0] for t in (scrape.SCRAPE, scrape.SLOWDOWN)} == {"not measured"}
    assert rep.exit_code() == 3


def _exporter(*, n=80, ms=60.0, rss=(90.0, 95.0), malformed=0, untracked=0, load=IDLE):
    rng = random.Random(5)
    return exporter.verdicts(scrape_s=_times(rng, n, ms), rss_mb=list(rss) if rss else [], rss_idle_mb=40.0,
                             malformed=malformed, untracked=untracked, load=load)


def test_fleet_exporter_passes_and_fails_by_target():
    ok = _exporter()
    assert ok.exit_code() == 0, ok.lines()
    line = _row(ok, exporter.SCRAPE).line()
    assert line.startswith("PASS") and "target < 500 ms" in line and "80 scrapes" in line
    assert _row(_exporter(ms=700.0), exporter.SCRAPE).verdict is V.Verdict.FAIL
    assert _row(_exporter(rss=(150.0, 230.0)), exporter.RSS).verdict is V.Verdict.FAIL   # the peak counts
    assert _exporter(malformed=3).exit_code() == 1
    lost = _exporter(untracked=12, n=0, rss=())
    assert _row(lost, exporter.UNTRACKED).verdict is V.Verdict.FAIL and lost.exit_code() == 1


def test_fleet_exporter_too_few_scrapes_or_load():
    few = _exporter(n=20)                      # no 95% interval of a p95 from 20 scrapes
    row = _row(few, exporter.SCRAPE)
    assert row.verdict is V.Verdict.INCONCLUSIVE and "too few" in row.reason and few.exit_code() == 3
    assert _row(_exporter(load=BUSY), exporter.SCRAPE).verdict is V.Verdict.PASS
    assert _row(_exporter(ms=700.0, load=BUSY), exporter.SCRAPE).verdict is V.Verdict.INCONCLUSIVE
    assert _row(_exporter(rss=(230.0,), load=BUSY), exporter.RSS).verdict is V.Verdict.FAIL  # memory: load is no excuse
