"""The pure parts of capture: rules (strict JSON, clamping), the format (npz + index, tamper
refusal), and the budget decisions of device_agent.capture.policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from device_agent.capture import policy
from runtime.contracts.capture import fileformat as ff
from runtime.contracts.capture.rules import CapturePolicy, CaptureRule, Trigger, clamp_rules
from runtime.contracts.errors import BundleError


def _meta(i: int = 0, *, samples: int = 2, labels: bool = False, rule: str = "s") -> ff.CaptureMeta:
    return ff.CaptureMeta(id=f"{1000 + i}-abcd", ts_ms=1000 + i, fleet="f", device="d",
                          model={"name": "m", "version": "1.0.0", "release": 1, "sha256": "a" * 64},
                          rule=rule, trigger="sample", rules=(rule,), samples=samples, inputs=("x",),
                          outputs=("y",), labels=labels, layout="batch")


def _cap(i: int = 0, **kw) -> ff.Capture:
    m = _meta(i, **kw)
    x = np.arange(m.samples * 4, dtype=np.float32).reshape(m.samples, 4) + i
    return ff.Capture(meta=m, inputs={"x": x}, outputs={"y": x[:, :3] * 2},
                      labels=np.arange(m.samples) if m.labels else None)


# ------------------------------------------------------------------ rules
def test_rule_json_round_trip_and_strictness():
    r = CaptureRule(name="low", trigger=Trigger.LOW_CONFIDENCE, threshold=0.6, priority=2)
    pol = CapturePolicy(rules=(r, CaptureRule(name="s")))
    assert CapturePolicy.from_json(json.loads(json.dumps(pol.to_json())), where="capture") == pol
    d = r.to_json() | {"typo": 1}
    with pytest.raises(BundleError, match=r"capture.rules\[0\]: unknown key\(s\) \['typo'\]"):
        CapturePolicy.from_json({"rules": [d]}, where="capture")
    with pytest.raises(BundleError, match="rate 2.0 must be in"):
        CapturePolicy.from_json({"rules": [r.to_json() | {"rate": 2.0}]}, where="capture")
    with pytest.raises(BundleError, match="duplicate rule name"):
        CapturePolicy.from_json({"rules": [r.to_json(), r.to_json()]}, where="capture")


def test_a_rule_larger_than_the_disk_budget_is_clamped_and_reported():
    rules = (CaptureRule(name="a", max_bytes=60, priority=0), CaptureRule(name="b", max_bytes=500, priority=5))
    out, clamps = clamp_rules(rules, disk_budget_bytes=100)
    assert [(r.name, r.max_bytes) for r in out] == [("a", 60), ("b", 100)]
    assert [(c.rule, c.asked_bytes, c.granted_bytes) for c in clamps] == [("b", 500, 100)]
    assert "clamped to the store's disk budget 100" in clamps[0].describe()


def test_effective_rules_config_wins_and_bundle_rules_can_be_refused():
    cfg = (CaptureRule(name="s", rate=0.5),)
    bundle = (CaptureRule(name="s", rate=1.0), CaptureRule(name="err", trigger=Trigger.ERROR))
    rules, _ = policy.effective_rules(cfg, bundle, use_bundle_rules=True, disk_budget_bytes=1 << 40)
    assert [(r.name, r.rate) for r in rules] == [("s", 0.5), ("err", 1.0)]  # err: the error default rate
    rules, _ = policy.effective_rules(cfg, bundle, use_bundle_rules=False, disk_budget_bytes=1 << 40)
    assert [r.name for r in rules] == ["s"]


# ------------------------------------------------------------------ which fire
def test_fired_sample_low_confidence_disagreement():
    sample = CaptureRule(name="s", rate=0.01)
    low = CaptureRule(name="low", trigger=Trigger.LOW_CONFIDENCE, rate=1.0, threshold=0.6, priority=3)
    dis = CaptureRule(name="dis", trigger=Trigger.DISAGREEMENT, rate=1.0, priority=1)
    rules = (sample, low, dis)
    confident = {"logits": np.array([[10.0, 0.0, 0.0]], np.float32)}
    unsure = {"logits": np.array([[0.1, 0.0, 0.05]], np.float32)}
    assert policy.fired(rules, confident, None, [0.5, 0.0, 0.0]) == []
    assert [r.name for r, _ in policy.fired(rules, confident, None, [0.001, 0.0, 0.0])] == ["s"]
    hits = policy.fired(rules, unsure, None, [0.5, 0.0, 0.0])
    assert [r.name for r, _ in hits] == ["low"] and hits[0][1] < 0.6
    hits = policy.fired(rules, confident, np.array([2]), [0.5, 0.0, 0.0])
    assert [r.name for r, _ in hits] == ["dis"]
    assert policy.fired(rules, confident, np.array([0]), [0.5, 0.0, 0.0]) == []
    both = policy.fired(rules, unsure, np.array([1]), [0.5, 0.0, 0.0])
    assert policy.attribute(both)[0].name == "low"  # the higher priority counts it
    probs = {"p": np.array([[0.55, 0.45]], np.float32)}  # already probabilities: no softmax
    assert policy.fired((low,), probs, None, [0.0])[0][1] == pytest.approx(0.55)


# ------------------------------------------------------------------ budgets
def _rules(**kw):
    return {r.name: r for r in kw.values()}


def test_admit_rule_budget_is_a_ring_and_too_large_is_refused():
    r = CaptureRule(name="s", max_count=3, max_bytes=1000)
    stored = [policy.Stored(f"c{i}", "s", 100, i) for i in range(3)]
    adm = policy.admit(stored, policy.Stored("new", "s", 100, 9), rules={"s": r}, disk_budget_bytes=10_000)
    assert adm.accept and adm.evict == ("c0",)
    adm = policy.admit(stored, policy.Stored("new", "s", 850, 9), rules={"s": r}, disk_budget_bytes=10_000)
    assert adm.accept and adm.evict == ("c0", "c1")  # count and bytes
    adm = policy.admit(stored, policy.Stored("big", "s", 1001, 9), rules={"s": r}, disk_budget_bytes=10_000)
    assert not adm.accept and adm.reason == "too_large" and adm.evict == ()


def test_admit_disk_budget_evicts_oldest_low_priority_first_never_higher():
    lo = CaptureRule(name="lo", priority=0, max_bytes=10_000)
    hi = CaptureRule(name="hi", priority=5, max_bytes=10_000)
    rules = {"lo": lo, "hi": hi}
    stored = [policy.Stored("lo-old", "lo", 300, 1), policy.Stored("hi-old", "hi", 300, 0),
              policy.Stored("lo-new", "lo", 300, 5), policy.Stored("gone", "removed-rule", 300, 9)]
    adm = policy.admit(stored, policy.Stored("h", "hi", 500, 10), rules=rules, disk_budget_bytes=1200)
    assert adm.accept and adm.evict == ("gone", "lo-old")  # orphans first, then the oldest low priority
    adm = policy.admit(stored, policy.Stored("l", "lo", 1000, 10), rules=rules, disk_budget_bytes=1200)
    assert not adm.accept and adm.reason == "disk_budget" and adm.evict == ()  # would need hi's space


def test_expired_by_rule_retention():
    rules = {"s": CaptureRule(name="s", retention_s=10)}
    stored = [policy.Stored("a", "s", 1, 0), policy.Stored("b", "s", 1, 15_000), policy.Stored("c", "x", 1, 0)]
    assert policy.expired(stored, rules=rules, now_ms=20_000, default_retention_s=100) == ["a"]


# ------------------------------------------------------------------ the format
def test_capture_round_trip_and_index(tmp_path):
    cap = _cap(0, labels=True)
    data = ff.encode(cap)
    back = ff.decode(data, where="x.npz")
    assert back.meta == cap.meta and np.array_equal(back.inputs["x"], cap.inputs["x"])
    assert np.array_equal(back.outputs["y"], cap.outputs["y"]) and back.labels.tolist() == [0, 1]
    e = ff.IndexEntry.of("d1/a.npz", data, cap.meta)
    idx = ff.CaptureIndex((e,))
    assert ff.CaptureIndex.from_bytes(idx.to_bytes(), where="index.json") == idx
    with pytest.raises(ff.CaptureFormatError, match="not a relative"):
        ff.IndexEntry.of("../a.npz", data, cap.meta)


def test_encode_refuses_arrays_that_disagree_with_the_meta():
    cap = _cap(0)
    with pytest.raises(ff.CaptureFormatError, match="do not hold 2 samples"):
        ff.encode(ff.Capture(meta=cap.meta, inputs={"x": cap.inputs["x"][:1]}, outputs=cap.outputs))
    with pytest.raises(ff.CaptureFormatError, match="reserved"):
        ff.encode(ff.Capture(meta=cap.meta, inputs={"__meta__": cap.inputs["x"]}, outputs=cap.outputs))


def _write_set(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        cap = _cap(i)
        data = ff.encode(cap)
        (root / f"{cap.meta.id}.npz").write_bytes(data)
        entries.append(ff.IndexEntry.of(f"{cap.meta.id}.npz", data, cap.meta))
    (root / ff.INDEX).write_bytes(ff.CaptureIndex(tuple(entries)).to_bytes())
    return entries


def test_load_set_refuses_tampered_partial_missing_and_unlisted_files_naming_each(tmp_path):
    root = tmp_path / "set"
    entries = _write_set(root)
    assert [e.meta.id for e, _ in ff.load_set(root)] == [e.meta.id for e in entries]
    a, b, c = (root / e.path for e in entries)
    raw = bytearray(a.read_bytes())
    raw[-40] ^= 0xFF
    a.write_bytes(bytes(raw))                              # tampered, same size
    b.write_bytes(b.read_bytes()[:-10])                    # partial
    c.unlink()                                             # missing
    (root / "extra.npz").write_bytes(ff.encode(_cap(7)))   # unlisted
    with pytest.raises(ff.CaptureSetRefusedError) as ei:
        ff.load_set(root)
    got = dict(ei.value.problems)
    assert got[entries[0].path].startswith("tampered") and got[entries[1].path].startswith("partial")
    assert got[entries[2].path] == "missing" and "not listed" in got["extra.npz"]
    assert entries[0].path in str(ei.value) and "4 file(s) refused" in str(ei.value)


def test_segmented_set_v2_round_trip_and_refusals(tmp_path):
    from runtime.contracts.capture import segments

    root = tmp_path / "set"
    root.mkdir()
    blob, entries = b"", []
    for i in range(3):
        data = ff.encode(_cap(i))
        entries.append(ff.IndexEntry.of(f"{_meta(i).id}.npz", data, _meta(i), segment="seg-1.seg",
                                        offset=len(blob) + segments.HEADER.size))
        blob += segments.frame(data)
    (root / "seg-1.seg").write_bytes(blob)
    idx = ff.CaptureIndex(tuple(entries))
    (root / ff.INDEX).write_bytes(idx.to_bytes())
    assert ff.is_capture_set(root) and ff.CaptureIndex.from_bytes(idx.to_bytes(), where="i") == idx
    assert json.loads(idx.to_bytes())["schema"] == ff.SET_SCHEMA
    got = list(ff.load_set(root))
    assert [c.meta for _, c in got] == [e.meta for e in entries]
    assert np.array_equal(got[1][1].inputs["x"], _cap(1).inputs["x"])
    # a /1 index may not name segments; a bad offset is refused
    v1 = json.loads(idx.to_bytes()) | {"schema": ff.SET_SCHEMA_V1}
    with pytest.raises(ff.CaptureFormatError, match="expected keys path, sha256, bytes, meta"):
        ff.CaptureIndex.from_bytes(json.dumps(v1).encode(), where="i")
    bad = json.loads(idx.to_bytes())
    bad["files"][0]["offset"] = 3
    with pytest.raises(ff.CaptureFormatError, match="offset"):
        ff.CaptureIndex.from_bytes(json.dumps(bad).encode(), where="i")
    raw = bytearray(blob)
    raw[entries[1].offset + 40] ^= 0xFF                     # the second record tampered
    (root / "seg-1.seg").write_bytes(bytes(raw))
    (root / "seg-2.seg").write_bytes(segments.frame(ff.encode(_cap(5))))  # a segment no entry names
    with pytest.raises(ff.CaptureSetRefusedError) as ei:
        ff.load_set(root)
    probs = dict(ei.value.problems)
    assert probs[f"{entries[1].path} (in seg-1.seg)"].startswith("tampered") and "not listed" in probs["seg-2.seg"]
    assert len(probs) == 2


def test_the_fast_npz_writer_is_what_numpy_reads():
    import io

    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2], "out:y": np.ones((2, 3), ">f8"),
              "__labels__": np.arange(2, dtype=np.int64), "flag": np.array(True), "é": np.zeros((0, 2), np.int8)}
    from runtime.contracts.capture.npzfile import npz_bytes

    with np.load(io.BytesIO(npz_bytes(arrays)), allow_pickle=False) as z:  # zipfile checks every crc
        assert sorted(z.files) == sorted(arrays)
        for k, a in arrays.items():
            assert z[k].dtype == a.dtype and z[k].shape == a.shape and np.array_equal(z[k], a)


def test_meta_text_is_the_json_of_the_meta_for_any_field_values():
    base = _meta(0)
    for m in (base, ff.CaptureMeta(**{**base.__dict__, "id": "1-a", "score": 0.123456789, "error": 'boom "x"\n\u00e9',
                                      "device": 'd"ev\\1', "model": {"name": "m", "release": 2, "sha256": "b" * 64}}),
              ff.CaptureMeta(**{**base.__dict__, "score": float("inf")})):
        text = m.to_text()
        assert json.loads(text) == json.loads(json.dumps(m.to_json())), text
        assert ff.CaptureMeta.from_json(json.loads(text), where="m") == m
    e = ff.IndexEntry.of('d/"q".npz', b"x", base)
    assert json.loads(e.to_text()) == {"path": 'd/"q".npz', "sha256": e.sha256, "bytes": 1, "meta": base.to_json()}
