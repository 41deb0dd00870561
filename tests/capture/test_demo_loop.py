"""`make demo-loop` end to end (real mosquitto, TUF repository, agents, compiles, rollout)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow  # two digits compiles and a rollout on real agents: a few minutes


def test_demo_loop_closes_the_loop(tmp_path, capsys):
    from toolchain.demo_loop import story
    from toolchain.fleet.localbroker import MOSQUITTO

    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (install the Debian package 'mosquitto'; `make test` does)")
    rc = story(tmp_path / "loop", devices=2)
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    assert "drift alarms on all 2 devices" in out
    assert re.search(r"edge-01 +\d+ +\d+ .* ok", out), "the pull table lists the device"
    assert '"kind": "capture_set"' in out, "release 2's manifest records the capture set it was built from"
    assert "rollout loop-r2 completed" in out
    m = re.search(r"worst PSI across the fleet: ([\d.]+) on release 1 \(alarmed\) -> ([\d.]+) on release 2", out)
    assert m and float(m.group(2)) < 0.25 < float(m.group(1)), out[-2000:]
