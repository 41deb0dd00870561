"""`make demo-loop` end to end (real mosquitto, TUF repository, agents, a fine-tune on the pulled
captures, compiles, rollout)."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow  # two digits compiles, a fine-tune and a rollout on real agents: a few minutes


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
    # release 2 is retrained: fine-tuned on the pulled labelled captures, compiled from that checkpoint
    m = re.search(r"fine-tuned release 1's weights on (\d+) captured labelled samples", out)
    assert m and int(m.group(1)) >= 100, out[-4000:]
    model = json.loads((tmp_path / "loop" / "build2" / "digits" / "manifest.json").read_text())["model"]
    assert model["metadata"]["weights"].endswith("release2.pt")
    # ... and measured better on held-out inverted digits, not worse on held-out normal ones
    rows = {k: [float(v) for v in re.search(rf"accuracy, held-out {k} digits \(\d+\) +([\d.]+)% +([\d.]+)%",
                                             out).groups()] for k in ("inverted", "normal")}
    assert rows["inverted"][1] - rows["inverted"][0] >= 30, rows
    assert rows["normal"][1] >= rows["normal"][0] - 3, rows
    m = re.search(r"worst PSI across the fleet: ([\d.]+) on release 1 \(alarmed\) -> ([\d.]+) on release 2", out)
    assert m and float(m.group(2)) < 0.25 < float(m.group(1)), out[-2000:]
