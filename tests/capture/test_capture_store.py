"""The capture store and recorder on real files: budgets, clamping, redaction, the bounded
queue, error and drift captures, recovery after a crash (also a real SIGKILL mid-write)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from device_agent.capture.config import CaptureSection
from device_agent.capture.store import CaptureStore
from device_agent.config import parse_config
from device_agent.configfile import ConfigError
from runtime.contracts.capture import fileformat as ff
from runtime.contracts.capture.rules import CapturePolicy, CaptureRule, Trigger

sys.path.insert(0, str(Path(__file__).parent))
from capturehelpers import SHA, ModelInfo, segment_records  # noqa: E402
from capturehelpers import recorder as _recorder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _feeds(i=0, n=1, shift=0.0):
    return {"x": np.full((n, 4), i, np.float32) + shift}, {"y": np.full((n, 3), i, np.float32)}


def test_sampling_writes_a_verified_set_with_model_rule_and_time(tmp_path):
    rec = _recorder(tmp_path, CaptureRule(name="s", rate=0.25), queue_max=1000)
    for i in range(400):
        f, o = _feeds(i)
        rec.on_result(SHA, f, o)
    assert rec.wait_idle()
    stored = rec.counters["stored"]
    assert stored == rec.counters["fired.s"] and 60 < stored < 140
    entries = list(ff.load_set(tmp_path / "cap"))
    assert len(entries) == stored
    e, cap = entries[0]
    assert cap.meta.model["sha256"] == SHA and cap.meta.model["release"] == 1 and cap.meta.rule == "s"
    assert cap.meta.device == "dev1" and abs(cap.meta.ts_ms - time.time() * 1000) < 60_000
    i = int(cap.inputs["x"][0, 0])
    assert np.array_equal(cap.outputs["y"], np.full((1, 3), i, np.float32))
    rec.stop()


def test_rule_count_budget_keeps_the_newest_and_disk_budget_clamps_and_reports(tmp_path):
    clamps = []
    rec = _recorder(tmp_path, CaptureRule(name="s", rate=1.0, max_count=5, max_bytes=1 << 20, priority=1),
                    CaptureRule(name="low", trigger=Trigger.LOW_CONFIDENCE, rate=1.0, max_bytes=4 << 20),
                    start=False, disk_budget_bytes=2 << 20, queue_max=100)
    rec.add_clamp_listener(clamps.append)
    rec.start()
    for i in range(20):
        rec.on_result(SHA, *_feeds(i))
    assert rec.wait_idle()
    kept = sorted(int(c.inputs["x"][0, 0]) for _, c in ff.load_set(tmp_path / "cap"))
    assert kept == [15, 16, 17, 18, 19]
    assert rec.store.counters.evicted["s"] == 15
    assert [(c.rule, c.granted_bytes) for c in clamps] == [("low", 2 << 20)]
    assert rec.stats()["clamped"] == [clamps[0].describe()]
    assert segment_records(tmp_path / "cap") == (5, 15)  # evicted captures are erased (zeroed) on disk
    rec.stop()


def test_disk_budget_keeps_high_priority_captures(tmp_path):
    hi = CaptureRule(name="hi", trigger=Trigger.ERROR, rate=1.0, priority=9, max_bytes=1 << 20)
    lo = CaptureRule(name="lo", rate=1.0, priority=0, max_bytes=1 << 20)
    probe = _recorder(tmp_path / "probe", lo)  # what one capture takes on disk (its record, its index entry)
    probe.on_result(SHA, *_feeds(100))
    assert probe.wait_idle()
    size = probe.store.usage()["disk_bytes"]
    probe.stop()
    rec = _recorder(tmp_path, hi, lo, disk_budget_bytes=int(size * 4.5), queue_max=100)
    for i in range(3):
        rec.on_failure(SHA, _feeds(i)[0], RuntimeError(f"boom {i}"))
    for i in range(10):
        rec.on_result(SHA, *_feeds(100 + i))
    assert rec.wait_idle()
    caps = [c for _, c in ff.load_set(tmp_path / "cap")]
    rules = sorted(c.meta.rule for c in caps)
    assert rules.count("hi") == 3 and 0 < rules.count("lo") <= 1
    err = [c for c in caps if c.meta.rule == "hi"]
    assert err[0].meta.trigger == "error" and err[0].meta.error.startswith("RuntimeError: boom")
    assert err[0].outputs == {}
    rec.stop()


def test_redaction_hook_transforms_drops_and_fails_closed(tmp_path):
    seen = []

    def hook(d):
        seen.append(d.rule)
        i = int(d.inputs["x"][0, 0])
        if i % 3 == 0:
            return None                      # dropped
        if i % 3 == 1:
            raise ValueError("hook broke")   # fail closed: dropped, counted
        d.inputs = {"x": np.zeros_like(d.inputs["x"])}
        d.outputs = {}
        return d

    rec = _recorder(tmp_path, CaptureRule(name="s", rate=1.0), redact=hook)
    for i in range(9):
        rec.on_result(SHA, *_feeds(i))
    assert rec.wait_idle()
    caps = [c for _, c in ff.load_set(tmp_path / "cap")]
    assert len(seen) == 9 and len(caps) == 3
    assert all(not c.inputs["x"].any() and c.meta.outputs == () for c in caps)
    assert rec.counters["dropped.redacted"] == 3 and rec.counters["dropped.redact_failed"] == 3
    rec.stop()


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    rec = _recorder(tmp_path, CaptureRule(name="s", rate=1.0), queue_max=4, start=False)  # no writer yet
    t0 = time.perf_counter()
    for i in range(50):
        rec.on_result(SHA, *_feeds(i))
    assert time.perf_counter() - t0 < 1.0
    assert rec.counters["dropped.queue_full"] == 46 and rec.counters["fired.s"] == 50
    rec.start()
    assert rec.wait_idle()
    assert rec.counters["stored"] == 4
    rec.stop()


def test_labels_from_expectations_and_disagreement(tmp_path):
    dis = CaptureRule(name="dis", trigger=Trigger.DISAGREEMENT, rate=1.0)
    rec = _recorder(tmp_path, dis)
    logits = {"y": np.array([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]], np.float32)}
    x = {"x": np.zeros((2, 4), np.float32)}
    rec.on_result(SHA, x, logits, expected=np.array([1, 0]))   # agrees: nothing
    rec.on_result(SHA, x, logits, expected=np.array([1, 2]))   # second disagrees
    rec.on_result(SHA, x, logits)                              # no expectation: nothing
    assert rec.wait_idle()
    caps = [c for _, c in ff.load_set(tmp_path / "cap")]
    assert len(caps) == 1 and caps[0].labels.tolist() == [1, 2] and caps[0].meta.labels
    rec.stop()


def test_drift_alarm_keeps_the_calls_that_moved_the_score(tmp_path):
    rule = CaptureRule(name="drift", trigger=Trigger.DRIFT, rate=1.0, drift_samples=5)
    rec = _recorder(tmp_path, rule, recent_calls=50)
    rng = np.random.default_rng(0)
    for i in range(80):
        shifted = i % 10 == 0
        x = rng.standard_normal((1, 4)).astype(np.float32) + (6.0 if shifted else 0.0)
        rec.on_result(SHA, {"x": x}, {"y": np.zeros((1, 3), np.float32)})
    assert rec.on_drift_alarm(SHA, "x") == 5
    assert rec.wait_idle()
    caps = [c for _, c in ff.load_set(tmp_path / "cap")]
    assert len(caps) == 5 and all(c.inputs["x"].mean() > 3 for c in caps)  # the 5 shifted of the last 50
    assert all(c.meta.trigger == "drift" and c.meta.score > 3 for c in caps)
    rec.stop()


def test_bundle_rules_apply_only_when_allowed(tmp_path):
    info = ModelInfo(capture=CapturePolicy(rules=(CaptureRule(name="b", rate=1.0),)))
    rec = _recorder(tmp_path / "a", info=info)
    rec.on_result(SHA, *_feeds(1))
    assert rec.wait_idle() and rec.counters["stored"] == 1
    rec.stop()
    rec = _recorder(tmp_path / "b", info=info, use_bundle_rules=False)
    rec.on_result(SHA, *_feeds(1))
    assert rec.wait_idle() and rec.counters["stored"] == 0
    rec.stop()


def test_whole_layout_for_models_without_a_batch_dim(tmp_path):
    from runtime.spec import TensorSpec

    info = ModelInfo(inputs=(TensorSpec("x", "float32", (2, 4)),))
    rec = _recorder(tmp_path, CaptureRule(name="s", rate=1.0), info=info)
    rec.on_result(SHA, {"x": np.ones((2, 4), np.float32)}, {"y": np.ones((1, 3), np.float32)})
    assert rec.wait_idle()
    (_, cap), = ff.load_set(tmp_path / "cap")
    assert cap.meta.layout == "whole" and cap.inputs["x"].shape == (1, 2, 4) and cap.meta.samples == 1
    rec.stop()


def test_store_recovers_unindexed_files_temp_files_and_a_corrupt_index(tmp_path):
    rec = _recorder(tmp_path, CaptureRule(name="s", rate=1.0))
    for i in range(4):
        rec.on_result(SHA, *_feeds(i))
    assert rec.wait_idle()
    rec.stop()
    root = tmp_path / "cap"
    index = ff.read_index(root)
    # a crash after a file's rename, before the index listed it: the index misses one
    (root / ff.INDEX).write_bytes(ff.CaptureIndex(index.entries[:3]).to_bytes())
    (root / ".tmp.half.tmp").write_bytes(b"half a capture")
    store = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert store.counters.adopted == 1 and len(store.entries()) == 4
    assert not list(root.glob(".tmp.*"))
    assert len(list(ff.load_set(root))) == 4
    (root / ff.INDEX).write_bytes(b"{not json")
    store = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert len(store.entries()) == 4 and (root / "index.json.corrupt").exists()
    (root / "index.json.corrupt").unlink()
    assert len(list(ff.load_set(root))) == 4


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    from capturehelpers import SHA, lookup
    from device_agent.capture.config import CaptureSection
    from device_agent.capture.recorder import CaptureRecorder
    from device_agent.capture.store import CaptureStore
    from runtime.contracts.capture.rules import CaptureRule
    sec = CaptureSection(enabled=True, rules=(CaptureRule(name="s", rate=1.0, max_count=40),), queue_max=1000)
    rec = CaptureRecorder(sec, CaptureStore(sys.argv[1], disk_budget_bytes=1 << 30, index_interval_s=0.05),
                          model_lookup=lookup(), fleet="f", device="d").start()
    i = 0
    print("ready", flush=True)
    while True:
        rec.on_result(SHA, {"x": np.full((4, 4), i, np.float32)}, {"y": np.zeros((4, 3), np.float32)})
        i += 1
        if i % 50 == 0:
            rec.wait_idle(5)
""")


def test_sigkill_mid_write_leaves_a_set_that_recovers_and_verifies(tmp_path):
    root = tmp_path / "cap"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for delay in (0.4, 0.7, 1.0):
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(Path(__file__).parent)],
                             stdout=subprocess.PIPE, env=env)
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        store = CaptureStore(root, disk_budget_bytes=1 << 30)   # the next start recovers
        n = len(store.entries())
        assert 0 < n and len(list(ff.load_set(root))) == n and not list(root.glob(".tmp.*"))


def test_capture_section_in_agent_toml(tmp_path):
    cfg = parse_config({"agent": {"state_dir": str(tmp_path)}, "capture": {
        "enabled": True, "disk_budget_bytes": 1000,
        "rules": [{"name": "s", "trigger": "sample", "rate": 0.01},
                  {"name": "err", "trigger": "error", "rate": 1.0, "priority": 5}]}})
    sec = cfg.section("capture")
    assert sec.enabled and [r.trigger for r in sec.rules] == [Trigger.SAMPLE, Trigger.ERROR]
    from device_agent.config import dumps, load_config

    (tmp_path / "a.toml").write_text(dumps(cfg))
    assert load_config(tmp_path / "a.toml").section("capture") == sec
    with pytest.raises(ConfigError, match=r"\[capture\] rules unknown key\(s\) \['rat'\]|unknown key"):
        parse_config({"capture": {"rules": [{"name": "s", "rat": 0.1}]}})
    with pytest.raises(ConfigError, match="rate 3.0 must be in"):
        parse_config({"capture": {"rules": [{"name": "s", "rate": 3.0}]}})
    with pytest.raises(ConfigError, match="cannot load it"):
        CaptureSection(enabled=True, redact="no_such_module_xyz:fn").redaction_hook()
    assert not CaptureSection().enabled  # off unless configured


def test_a_raised_drift_alarm_captures_through_attach_drift_a_cleared_one_does_not(tmp_path):
    from device_agent.capture.startup import CaptureHandle, attach_drift
    from device_agent.monitoring.drift import AlarmChange
    from runtime.drift.alarm import Transition

    rec = _recorder(tmp_path, CaptureRule(name="drift", trigger=Trigger.DRIFT, rate=1.0, drift_samples=3))
    listeners = []
    monitor = type("Monitor", (), {"add_listener": lambda self, fn: listeners.append(fn)})()
    attach_drift(CaptureHandle(recorder=rec, store=rec.store, agent=None), monitor)
    for i in range(10):
        rec.on_result(SHA, *_feeds(i, shift=5.0 if i > 6 else 0.0))

    def change(tr):
        return AlarmChange(tr, "drift.psi", "x", "input", 1.0, 0.25, {"name": "tiny", "sha256": SHA})

    listeners[0](None, [change(Transition.CLEARED)])
    assert rec.wait_idle() and not rec.store.entries()
    listeners[0](None, [change(Transition.RAISED)])
    assert rec.wait_idle()
    caps = [c for _, c in ff.load_set(tmp_path / "cap")]
    assert sorted(int(c.inputs["x"].max()) for c in caps) == [12, 13, 14]  # the 3 calls farthest from the baseline
    rec.stop()



def _cap(i, rule="s"):
    f, o = _feeds(i)
    meta = ff.CaptureMeta(f"{1000 + i}-x", 1000 + i, "f", "dev1", {"name": "tiny", "release": 1, "sha256": SHA},
                          rule, "sample", (rule,), 1, ("x",), ("y",), False, "batch")
    return ff.Capture(meta=meta, inputs=f, outputs=o)


def _put_all(store, caps, rules):
    for c in caps:
        assert store.put(c, rules=rules) is None
    store.flush_index(force=True)


def test_one_capture_evicted_or_pulled_inside_a_segment_is_erased_and_empty_segments_go(tmp_path):
    root = tmp_path / "cap"
    size = len(ff.encode(_cap(0))) + 16  # a record: header + the capture
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0, segment_bytes=3 * size)
    rules = {"s": CaptureRule(name="s", rate=1.0, max_count=4)}
    _put_all(store, [_cap(i) for i in range(10)], rules)  # segments of 0-2, 3-5, 6-8, 9
    assert sorted(int(c.inputs["x"][0, 0]) for _, c in ff.load_set(root)) == [6, 7, 8, 9]
    assert store.counters.evicted["s"] == 6
    assert segment_records(root) == (4, 0) and len(list(root.glob("*.seg"))) == 2  # 0-5 went with their segments
    assert store.remove(["1007-x"]) == ["1007-x"]  # pulled: out of the index, its record erased at once
    assert segment_records(root) == (3, 1)         # the erased payload is zeros (checked inside)
    assert all(ff.verify_entry(e, store.read(e)) is None for e in store.entries())
    assert [e.meta.id for e, _ in ff.load_set(root)] == ["1006-x", "1008-x", "1009-x"]
    store.close()
    again = CaptureStore(root, disk_budget_bytes=1 << 30)  # a restart keeps exactly these
    assert [e.meta.id for e in again.entries()] == ["1006-x", "1008-x", "1009-x"] and again.counters.adopted == 0


def test_a_crash_mid_batch_adopts_complete_records_and_cuts_a_partial_one(tmp_path):
    from runtime.contracts.capture import segments

    root = tmp_path / "cap"
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0)
    rules = {"s": CaptureRule(name="s", rate=1.0)}
    _put_all(store, [_cap(i) for i in range(3)], rules)
    store.close()
    (seg,) = root.glob("*.seg")
    listed = seg.stat().st_size
    with open(seg, "ab") as f:  # the writer appended two more, the second cut off, no index listed them
        f.write(segments.frame(ff.encode(_cap(3))) + segments.frame(ff.encode(_cap(4)))[:-25])
    store = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert store.counters.adopted == 1 and [e.meta.id for e in store.entries()][-1] == "1003-x"
    assert seg.stat().st_size == listed + 16 + len(ff.encode(_cap(3)))  # the cut-off record is gone
    assert segment_records(root) == (4, 0) and len(list(ff.load_set(root))) == 4


def test_a_store_of_standalone_files_is_read_and_new_captures_go_to_segments(tmp_path):
    root = tmp_path / "cap"
    root.mkdir()
    old = [_cap(i) for i in range(2)]
    entries = []
    for c in old:  # the store of an older agent: one .npz per capture, an index of schema /1
        data = ff.encode(c)
        (root / f"{c.meta.id}.npz").write_bytes(data)
        entries.append(ff.IndexEntry.of(f"{c.meta.id}.npz", data, c.meta))
    (root / ff.INDEX).write_bytes(ff.CaptureIndex(tuple(entries)).to_bytes())
    assert b"edgeship.capture-set/1" in (root / ff.INDEX).read_bytes()
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0)
    rules = {"s": CaptureRule(name="s", rate=1.0, max_count=3)}
    _put_all(store, [_cap(i) for i in range(2, 4)], rules)  # the ring evicts the oldest standalone file
    assert b"edgeship.capture-set/2" in (root / ff.INDEX).read_bytes()
    assert [e.meta.id for e, _ in ff.load_set(root)] == ["1001-x", "1002-x", "1003-x"]
    assert not (root / "1000-x.npz").exists() and (root / "1001-x.npz").exists()
    assert ff.verify_entry(store.entry("1001-x"), store.read(store.entry("1001-x"))) is None
    store.close()


def test_index_writes_append_to_a_journal_that_readers_apply_and_a_new_snapshot_replaces(tmp_path, monkeypatch):
    from device_agent.capture import indexfile

    monkeypatch.setattr(indexfile, "JOURNAL_MIN_BYTES", 6000)
    root = tmp_path / "cap"
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0)
    rules = {"s": CaptureRule(name="s", rate=1.0, max_count=6)}
    _put_all(store, [_cap(0)], rules)                         # the first write: a snapshot naming a journal
    snapshot = (root / ff.INDEX).read_bytes()
    for i in range(1, 4):
        _put_all(store, [_cap(i)], rules)                     # then one appended line each
    assert (root / ff.INDEX).read_bytes() == snapshot
    (journal,) = root.glob("index.*.journal")
    assert journal.read_bytes().count(b"\n") == 3 and ff.read_index(root).journal == journal.name
    assert [e.meta.id for e, _ in ff.load_set(root)] == [f"{1000 + i}-x" for i in range(4)]
    _put_all(store, [_cap(i) for i in range(4, 9)], rules)    # the ring evicts: removals are journalled too
    ids = [e.meta.id for e in store.entries()]
    assert [e.meta.id for e in ff.read_index(root).entries] == ids == [f"{1000 + i}-x" for i in range(3, 9)]
    for i in range(9, 20):
        _put_all(store, [_cap(i)], rules)
    assert (root / ff.INDEX).read_bytes() != snapshot and len(list(root.glob("index.*.journal"))) <= 1  # compacted
    store.close()
    with open(root / ff.read_index(root).journal, "ab") as f:
        f.write(b'{"remove":["1019-')                           # an append cut off by a crash: ignored
    assert [e.meta.id for e in ff.read_index(root).entries] == [f"{1000 + i}-x" for i in range(14, 20)]
    again = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert [e.meta.id for e in again.entries()] == [f"{1000 + i}-x" for i in range(14, 20)]
    assert len(list(ff.load_set(root))) == 6


def test_the_writer_batches_captures_for_write_interval_s_unless_the_queue_fills(tmp_path):
    batches = []
    rec = _recorder(tmp_path, CaptureRule(name="s", rate=1.0), start=False, write_interval_s=1.5, queue_max=8)
    inner = rec._write
    rec._write = lambda d: (batches.append(time.monotonic()), inner(d))
    rec.start()
    t0 = time.monotonic()
    for i in range(3):                                   # below half the queue: they wait for the interval
        rec.on_result(SHA, *_feeds(i))
    assert rec.wait_idle(10, kick=False)
    assert len(batches) == 3 and min(batches) - t0 >= 1.4 and max(batches) - min(batches) < 0.5  # one batch
    batches.clear()
    t0 = time.monotonic()
    for i in range(4):                                   # half the queue: the batch starts at once
        rec.on_result(SHA, *_feeds(10 + i))
    assert rec.wait_idle(10, kick=False)
    assert len(batches) == 4 and max(batches) - t0 < 1.0
    assert rec.counters["stored"] == 7
    rec.stop()


def test_the_fast_path_samples_at_the_rule_rate_without_a_coin_per_call(tmp_path):
    """One sample rule: calls count down to the next selected one (geometric gaps), the same
    selections in law as a coin per call; rate 1 keeps every call, and the first call is not
    special."""
    import random

    rec = _recorder(tmp_path, CaptureRule(name="s", rate=0.02), start=False)
    draws = []
    rng = random.Random(3).random
    rec._rng = lambda: draws.append(1) or rng()
    m = rec.rules_for(SHA)
    assert m.rate == 0.02 and m.countdown[0] >= 1
    f, o = _feeds(1)
    picked = []
    rec._offer = lambda *a, **k: picked.append(1)
    n = 50_000
    for _ in range(n):
        rec.on_result(SHA, f, o)
    # binomial(50000, 0.02): mean 1000, sd ~31; 5 sd either way
    assert 845 < len(picked) < 1155, len(picked)
    assert len(draws) <= len(picked) + 2  # one draw per selection, not per call
    firsts = []
    for seed in range(200):
        r = _recorder(tmp_path / str(seed), CaptureRule(name="s", rate=0.5), start=False)
        r._rng = random.Random(seed).random
        got = []
        r._offer = lambda *a, **k: got.append(1)
        r.on_result(SHA, f, o)
        firsts.append(len(got))
    assert 60 < sum(firsts) < 140  # the first call is selected about half the time at rate 0.5
    every = _recorder(tmp_path / "all", CaptureRule(name="s", rate=1.0), start=False)
    got = []
    every._offer = lambda *a, **k: got.append(1)
    for _ in range(10):
        every.on_result(SHA, f, o)
    assert len(got) == 10
