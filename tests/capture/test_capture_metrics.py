"""What capture did, where an operator looks (issue 16): ``edgeship_capture_*`` on ``/metrics``
(promtool-clean, bounded labels), a ``capture`` line in ``edgeship-agent status``, and a
config rule that cannot fire on the served model logged, counted and sent on MQTT ``events``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))

from promserver import PROMTOOL, promtool_check  # noqa: E402

from agentproc import agent_cmd, subprocess_env  # noqa: E402
from capturehelpers import SHA, recorder  # noqa: E402
from runtime.contracts.capture.rules import CaptureRule, Trigger  # noqa: E402

# the tiny model's one output is "y": "logits" makes the low_confidence rule dead on it; the
# disk budget is smaller than keep's max_bytes (64 MiB by default): keep is clamped
CONFIG = """[capture]
enabled = true
disk_budget_bytes = 1048576
write_interval_s = 0.05
[[capture.rules]]
name = "keep"
trigger = "sample"
rate = 1.0
[[capture.rules]]
name = "unsure"
trigger = "low_confidence"
output = "logits"
max_bytes = 65536
"""


def _samples(text: str, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, _, v in (ln.rpartition(" ") for ln in text.splitlines())
            if k.startswith(prefix + "{") or k == prefix}


def _scrape(url: str, until, timeout_s: float = 15.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        if until(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_capture_counters_reach_metrics_status_and_a_dead_rule_is_reported(capture_agent, broker):
    from toolchain.fleet.localbroker import Recorder

    events = Recorder(broker.port, "edgeship/v1/f1/capm/events")
    try:
        a = capture_agent(CONFIG, device="capm")
        x = np.random.default_rng(3).standard_normal((1, 4)).astype(np.float32)
        with httpx.Client(timeout=10) as c:
            for _ in range(5):
                a.infer(c, x)
        text = _scrape(a.url, lambda t: _samples(t, "edgeship_capture_stored_total").get(
            'edgeship_capture_stored_total{rule="keep"}') == 5)
        if PROMTOOL is not None:
            code, out = promtool_check(text.encode())
            assert code == 0, out
        assert _samples(text, "edgeship_capture_fired_total") == {'edgeship_capture_fired_total{rule="keep"}': 5}
        assert _samples(text, "edgeship_capture_stored_total") == {'edgeship_capture_stored_total{rule="keep"}': 5}
        dropped = _samples(text, "edgeship_capture_dropped_total")
        assert set(dropped) == {f'edgeship_capture_dropped_total{{reason="{r}"}}' for r in
                                ("queue_full", "redacted", "redact_failed", "write_failed", "index_failed")}
        assert set(dropped.values()) == {0.0}
        assert _samples(text, "edgeship_capture_refused_total")['edgeship_capture_refused_total{reason="disk_budget"}'] == 0
        held = _samples(text, "edgeship_capture_held")
        assert held == {'edgeship_capture_held{rule="keep"}': 5}
        on_disk = sum(p.stat().st_size for p in (a.state / "capture").glob("seg-*"))
        held_bytes = _samples(text, "edgeship_capture_held_bytes")['edgeship_capture_held_bytes{rule="keep"}']
        assert 0 < held_bytes <= on_disk
        assert _samples(text, "edgeship_capture_disk_budget_bytes") == {"edgeship_capture_disk_budget_bytes": 1048576}
        disk = _samples(text, "edgeship_capture_disk_bytes")["edgeship_capture_disk_bytes"]
        assert held_bytes < disk <= 1048576 + (64 << 10)  # headers and index on top of the captures; within the budget's slack
        assert _samples(text, "edgeship_capture_rules_clamped") == {"edgeship_capture_rules_clamped": 1}
        assert _samples(text, "edgeship_capture_rules_invalid") == {"edgeship_capture_rules_invalid": 1}
        assert "edgeship_capture_queue_depth 0.0" in text

        # the dead rule: a warning in the log naming rule, model and the outputs there are ...
        log = [json.loads(ln) for ln in (a.tmp / "agent.log").read_text().splitlines() if ln.startswith("{")]
        warn = [r for r in log if "capture.rule_invalid" in json.dumps(r)]
        assert len(warn) == 1, log[-5:]
        w = json.dumps(warn[0])
        assert "unsure" in w and "tiny" in w and "'logits' is not an output of the model" in w and '"y"' in w

        # ... and an event on MQTT, next to the clamp
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            docs = [json.dumps(d) for d in list(events.by_id.values())]
            if any("capture.rule_invalid" in d for d in docs) and any("capture.rule_clamped" in d for d in docs):
                break
            time.sleep(0.1)
        ev = next(d for d in docs if "capture.rule_invalid" in d)
        assert '"rule": "unsure"' in ev and '"outputs": ["y"]' in ev, ev

        # edgeship-agent status: one capture line, the problems under it
        r = subprocess.run(agent_cmd("status", "--config", str(a.tmp / "agent.toml")), env=subprocess_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("capture "))
        assert "5 held (" in line and "of 1.0 MiB), 5 stored, 0 dropped, 0 refused, 0 queued" in line, r.stdout
        assert "max_bytes 67108864 clamped" in r.stdout and "'logits' is not an output" in r.stdout
        js = json.loads(subprocess.run(agent_cmd("status", "--json", "--config", str(a.tmp / "agent.toml")),
                                       env=subprocess_env(), capture_output=True, text=True, timeout=60).stdout)
        assert js["capture"]["store"]["captures"] == 5 and js["capture"]["counters"]["stored"] == 5
    finally:
        events.close()


@pytest.mark.parametrize("n", [0, 300])
def test_the_capture_collector_reads_running_totals_not_the_captures(tmp_path, n):
    """With 0 or 300 captures held, a scrape never walks the stored entries: the families come
    from counters and running totals."""
    from device_agent.monitoring.capture_metrics import CaptureCollector

    rec = recorder(tmp_path, CaptureRule(name="s", rate=1.0, max_count=10_000), queue_max=1000, write_interval_s=0)
    for i in range(n):
        rec.on_result(SHA, {"x": np.full((1, 4), i, np.float32)}, {"y": np.zeros((1, 3), np.float32)})
    assert rec.wait_idle(30)
    walked = []
    rec.store._entries = _Watched(rec.store._entries, walked)
    fams = {f.name: f for f in CaptureCollector(SimpleNamespace(capture=rec)).collect()}
    assert walked == []
    assert [s.value for s in fams["edgeship_capture_held"].samples] == ([n] if n else [])
    assert [s.value for s in fams["edgeship_capture_stored"].samples] == ([n] if n else [])
    if n:
        assert fams["edgeship_capture_held_bytes"].samples[0].value == rec.store.usage()["bytes"] > 0
    rec.stop()
    assert list(CaptureCollector(SimpleNamespace(capture=None)).collect()) == []  # capture off: no family


class _Watched(dict):
    """The store's entries, noting every walk over them."""

    def __init__(self, d, walked):
        super().__init__(d)
        self._walked = walked

    def values(self):
        self._walked.append("values")
        return super().values()

    def items(self):
        self._walked.append("items")
        return super().items()

    def __iter__(self):
        self._walked.append("iter")
        return super().__iter__()


def test_a_config_rule_that_cannot_judge_the_model_is_reported_once_per_model_and_never_fires(tmp_path):
    seen = []
    dead = CaptureRule(name="unsure", trigger=Trigger.LOW_CONFIDENCE, output="logits")
    rec = recorder(tmp_path, dead, CaptureRule(name="s", rate=1.0), start=False)
    rec.add_invalid_listener(seen.append)
    rec.start()
    scores = {"y": np.array([[0.3, 0.3, 0.4]], np.float32)}  # unsure on "y": would fire if output were unset
    for sha in (SHA, SHA, "c" * 64):
        rec.on_result(sha, {"x": np.zeros((1, 4), np.float32)}, scores)
    assert rec.wait_idle()
    assert [(i.rule, i.outputs) for i in seen] == [("unsure", ("y",)), ("unsure", ("y",))]  # per model, once
    assert "output 'logits' is not an output of the model (outputs: y float32[batch, 3])" in seen[0].describe()
    assert rec.counters["stored"] == 3 and "fired.unsure" not in rec.counters
    assert [r.name for r in rec.rules_for(SHA).result] == ["s"]
    assert len(rec.stats()["invalid"]) == 2
    rec.stop()


def test_a_rule_left_without_rate_keeps_every_match_unless_it_samples(tmp_path):
    from device_agent.config import parse_config
    from toolchain.capture_rules import load_rules_file

    rules = [{"name": t, "trigger": t} for t in ("sample", "low_confidence", "disagreement", "error", "drift")]
    want = {"sample": 0.01, "low_confidence": 1.0, "disagreement": 1.0, "error": 1.0, "drift": 1.0}
    sec = parse_config({"agent": {"state_dir": str(tmp_path)}, "capture": {"rules": rules}}).section("capture")
    assert {r.name: r.rate for r in sec.rules} == want                       # agent.toml
    (tmp_path / "r.toml").write_text("".join(f'[[rules]]\nname = "{t}"\ntrigger = "{t}"\n' for t in want))
    policy = load_rules_file(tmp_path / "r.toml")
    assert {r.name: r.rate for r in policy.rules} == want                    # edgeship package --capture-rules
    assert [r["rate"] for r in policy.to_json()["rules"]] == list(want.values())  # model.json: explicit
    assert CaptureRule(name="e", trigger=Trigger.ERROR, rate=0.5).rate == 0.5  # a rate given is kept
    assert CaptureRule.from_table({"name": "d", "trigger": "drift", "rate": 0.0}, where="r").rate == 0.0


def test_an_unknown_key_gets_a_did_you_mean_and_the_valid_keys():
    from device_agent.config import parse_config
    from device_agent.configfile import ConfigError
    from runtime.contracts.errors import BundleError

    with pytest.raises(BundleError, match=r"unknown key\(s\) \['rat'\] \(did you mean 'rate'\?\); valid keys: "
                                          r"\['drift_samples', .*'rate', 'retention_s'"):
        CaptureRule.from_table({"name": "s", "rat": 1.0}, where="rules[0]")
    with pytest.raises(BundleError, match=r"\['colour'\]; valid keys"):  # nothing close: no guess
        CaptureRule.from_table({"name": "s", "colour": 1.0}, where="rules[0]")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['tigger'\] \(did you mean 'trigger'\?\)"):
        parse_config({"capture": {"rules": [{"name": "s", "tigger": "error"}]}})
