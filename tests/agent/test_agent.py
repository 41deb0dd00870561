"""The in-process Agent: inference, observers, metrics, switching under load, GC of in-use models, batching."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time

import numpy as np
import pytest

from device_agent.agent import Agent, ModelNotFoundError, ModelSwitchError, NotReadyError
from device_agent.config import AgentConfig, BatchingSection
from device_agent.store import NoPreviousModelError, Store
from runtime.errors import InferenceError, InputMismatchError
from runtime.fsutil import sha256_bytes

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


def _agent(tmp_path, bundles, *names, **serving) -> tuple[Agent, list]:
    store = Store(tmp_path / "state")
    refs = [store.install_bundle(bundles[n].path) for n in names]
    store.activate(refs[0].sha256)
    return Agent(AgentConfig.for_state_dir(tmp_path / "state", **serving)), refs


def _expected(scale: float) -> np.ndarray:
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0) * scale
    return X @ w + np.array([0.1, -0.2, 0.3], dtype=np.float32) * scale


def test_infer_observers_metrics_and_status(tmp_path, bundles):
    agent, (r1,) = _agent(tmp_path, bundles, "v1")
    seen = []
    agent.add_request_observer(lambda sha, ok, dt: seen.append((sha, ok, dt)))
    agent.add_request_observer(lambda *a: 1 / 0)  # a broken observer must not break requests
    np.testing.assert_allclose(agent.infer({"x": X})["y"], _expected(1.0), rtol=1e-6)
    np.testing.assert_allclose(agent.infer({"x": X}, model="tiny")["y"], _expected(1.0), rtol=1e-6)
    with pytest.raises(ModelNotFoundError):
        agent.infer({"x": X}, model="other")
    with pytest.raises(InputMismatchError):
        agent.infer({"x": X.astype(np.float64)})
    assert [(s, ok) for s, ok, _ in seen] == [(r1.sha256, True)] * 2 and all(dt > 0 for *_, dt in seen)
    snap = agent.metrics_snapshot()
    assert (snap["requests"], snap["ok"], snap["errors"], snap["rejected"]) == (3, 2, 0, 1)
    assert snap["latency_samples"] == 2 and snap["latency_ms_p50"] > 0
    rolled = agent.roll_metrics_window()
    assert rolled.requests == 3 and agent.metrics.snapshot().requests == 0
    assert agent.metrics.snapshot().requests_total == 3
    st = agent.status()
    assert st["ready"] and st["active"]["sha256"] == r1.sha256 and st["previous"] is None
    assert "onnxruntime" in st["engines"] and st["agent_version"]
    agent.close()


def test_engine_failure_is_an_error_for_that_request_only(tmp_path, bundles):
    agent, (rp,) = _agent(tmp_path, bundles, "picker")
    seen = []
    agent.add_request_observer(lambda sha, ok, dt: seen.append(ok))
    good = {"x": X, "idx": np.array([[0], [2]], dtype=np.int64)}
    assert agent.infer(good)["picked"].shape == (2, 1)
    with pytest.raises(InferenceError):
        agent.infer({"x": X, "idx": np.array([[0], [7]], dtype=np.int64)})
    assert agent.infer(good)["picked"].shape == (2, 1)
    assert seen == [True, False, True]
    assert agent.metrics.snapshot().errors == 1
    agent.close()


def test_no_model_means_not_ready(tmp_path):
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "empty"))
    assert not agent.ready and agent.status()["active"] is None
    with pytest.raises(NotReadyError):
        agent.infer({"x": X})
    with pytest.raises(NoPreviousModelError):
        agent.rollback()


def test_switch_under_concurrent_requests_drops_none(tmp_path, bundles):
    agent, (r1, r2) = _agent(tmp_path, bundles, "v1", "v2")
    want = {1.0: _expected(1.0), 2.0: _expected(2.0)}
    errors, answers, stop = [], {1.0: 0, 2.0: 0}, threading.Event()

    def client():
        while not stop.is_set():
            try:
                y = agent.infer({"x": X})["y"]
            except Exception as e:  # any failure is a dropped request
                errors.append(repr(e))
                continue
            for k, v in want.items():
                if np.allclose(y, v, rtol=1e-5):
                    answers[k] += 1
                    break
            else:
                errors.append("answer from neither model")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    sessions = []
    for i in range(20):
        time.sleep(0.01)
        sessions.append(agent.current())
        if i % 2 == 0:
            agent.switch_to(r2.sha256)
        else:
            assert agent.rollback() == r1
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert answers[1.0] > 0 and answers[2.0] > 0
    assert all(s.closed for s in sessions)  # every replaced session was closed once drained
    cur = agent.current()
    assert agent.switch_to(r1.sha256) == r1 and agent.current() is cur  # already serving: no reload
    assert agent.store.active() == r1 and agent.current().ref == r1 and not agent.current().closed
    agent.close()


def test_gc_spares_a_model_a_request_still_uses(tmp_path, bundles):
    agent, (r1, r2, rp) = _agent(tmp_path, bundles, "v1", "v2", "picker")
    lease = agent.acquire()  # a request in flight on v1
    agent.switch_to(r2.sha256, drain_timeout_s=0.05)
    agent.switch_to(rp.sha256, drain_timeout_s=0.05)  # v1 is neither active nor previous now
    assert agent.in_use() >= {r1.sha256, rp.sha256}
    assert agent.gc(min_age_s=0) == []
    out = agent.run_on(lease, lambda: lease.session.run({"x": X}))  # the old session still works
    np.testing.assert_allclose(out["y"], _expected(1.0), rtol=1e-6)
    agent.release(lease)
    assert lease.closed
    assert agent.gc() == []  # installed just now: within the default grace period
    assert agent.gc(min_age_s=0) == [r1.sha256]
    agent.close()


def _unloadable_bundle(tmp_path, good_path):
    with tarfile.open(good_path) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    junk = b"this is not an onnx model"
    info = json.loads(members["model.json"])
    for f in info["files"]:
        if f["path"] == "model/model.onnx":
            f.update(sha256=sha256_bytes(junk), bytes=len(junk))
    info["release"] = 9
    members.update({"model/model.onnx": junk, "model.json": json.dumps(info).encode()})
    path = tmp_path / "junk.tar"
    with tarfile.open(path, "w:") as tf:
        for name, data in sorted(members.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def test_gc_after_switch_keeps_recent_models_and_drops_old_ones(tmp_path, bundles):
    import os

    agent, (r1, r2, rp) = _agent(tmp_path, bundles, "v1", "v2", "picker")
    agent.switch_to(r2.sha256)
    assert {m.sha256 for m in agent.store.models()} == {r1.sha256, r2.sha256, rp.sha256}  # picker is recent
    old = time.time() - 7200
    os.utime(agent.store.model_dir(rp.sha256), (old, old))  # staged two hours ago, never used
    agent.rollback()  # a switch: GC runs after it
    assert {m.sha256 for m in agent.store.models()} == {r1.sha256, r2.sha256}
    agent.close()


def test_a_switch_that_fails_changes_nothing(tmp_path, bundles):
    agent, (r1,) = _agent(tmp_path, bundles, "v1")
    bad = agent.store.install_bundle(_unloadable_bundle(tmp_path, bundles["v1"].path))
    with pytest.raises(ModelSwitchError, match="did not load"):
        agent.switch_to(bad.sha256)
    assert agent.store.active() == r1 and agent.store.previous() is None
    assert agent.current().ref == r1 and agent.infer({"x": X})["y"].shape == (2, 3)
    agent.close()


def test_an_active_model_that_does_not_load_leaves_the_agent_up_but_not_ready(tmp_path, bundles):
    store = Store(tmp_path / "state")
    r1 = store.install_bundle(bundles["v1"].path)
    bad = store.install_bundle(_unloadable_bundle(tmp_path, bundles["v1"].path))
    store.activate(r1.sha256)
    store.activate(bad.sha256)
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    st = agent.status()
    assert not st["ready"] and st["active"]["sha256"] == bad.sha256 and bad.sha256[:12] in st["load_error"]
    from device_agent.agent.metrics import ModelEvent

    assert agent.model_events.snapshot()[ModelEvent.LOAD_FAILED] == 1  # one failure, counted once
    with pytest.raises(NotReadyError, match="did not load"):
        agent.infer({"x": X})
    assert agent.rollback() == r1 and agent.ready  # the way out still works
    assert agent.infer({"x": X})["y"].shape == (2, 3) and agent.status()["load_error"] is None
    agent.close()


def test_batching_merges_concurrent_requests(tmp_path, bundles):
    agent, _ = _agent(tmp_path, bundles, "v1", batching=BatchingSection(max_batch_size=8, max_wait_ms=300.0))
    calls = []
    agent.add_request_observer(lambda *a: calls.append(a))
    rows = [np.full((1 + i % 2, 4), i, dtype=np.float32) for i in range(8)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def one(i):
        barrier.wait()
        results[i] = agent.infer({"x": rows[i]})["y"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0)
    for i in range(8):
        np.testing.assert_allclose(results[i], rows[i] @ w + np.array([0.1, -0.2, 0.3], np.float32), rtol=1e-5)
    latencies = {round(c[2], 9) for c in calls}
    assert len(calls) == 8 and len(latencies) < 8  # some requests shared one engine call
    with pytest.raises(InputMismatchError):
        agent.infer({"x": np.zeros((1, 5), np.float32)})
    agent.close()


def test_an_observer_that_raises_is_logged_and_never_fails_the_request(tmp_path, bundles, caplog):
    """Request observers and tensor observers alike: the request answers, the others still run."""
    import logging

    agent, _ = _agent(tmp_path, bundles, "v1")
    seen = []

    def broken_request_observer(*a):
        raise RuntimeError("request observer down")

    def broken_tensor_observer(*a):
        raise RuntimeError("tensor observer down")

    agent.add_request_observer(broken_request_observer)
    agent.add_request_observer(lambda *a: seen.append("request"))
    agent.add_tensor_observer(broken_tensor_observer)
    agent.add_tensor_observer(lambda *a: seen.append("tensor"))
    try:
        with caplog.at_level(logging.ERROR, logger="edgeship"):
            np.testing.assert_allclose(agent.infer({"x": X})["y"], _expected(1.0), rtol=1e-5)
        failed = {r.fields["error"]: r.fields["observer"] for r in caplog.records if "observer.failed" in r.getMessage()}
        assert failed == {"request observer down": broken_request_observer.__qualname__,
                          "tensor observer down": broken_tensor_observer.__qualname__}, failed
        assert sorted(seen) == ["request", "tensor"]
    finally:
        agent.close()


def test_a_batched_calls_time_is_the_models_time_per_request_it_served(tmp_path, bundles):
    """avg_latency_s is what the drift cost budget weighs drift's CPU per request against: a
    batched engine call of 8 requests counts an eighth of its time per request, else the budget
    lets drift cost up to 8 times its share."""
    agent, _ = _agent(tmp_path, bundles, "v1")
    lease = agent.acquire()
    try:
        agent.run_on(lease, lambda: time.sleep(0.04) or {}, requests=8)
        assert 0.004 <= lease.avg_latency_s < 0.02, lease.avg_latency_s
        agent.run_on(lease, lambda: time.sleep(0.005) or {})
        assert 0.004 <= lease.avg_latency_s < 0.02, lease.avg_latency_s
    finally:
        agent.release(lease)
        agent.close()


def test_batching_leaves_scalar_inputs_alone(tmp_path, bundles):
    """A rank-0 input (Silero VAD's int64 ``sr``) has no batch axis: it is passed once, and
    requests whose scalars differ never share an engine call."""
    from device_agent.agent.batching import batchable

    agent, _ = _agent(tmp_path, bundles, "scaled", batching=BatchingSection(max_batch_size=8, max_wait_ms=300.0))
    cur = agent.current()
    assert batchable(cur.session.inputs, cur.session.outputs)
    runs = []
    real_run = cur.session.run
    cur.session.run = lambda feeds: runs.append({k: v.shape for k, v in feeds.items()}) or real_run(feeds)
    ks = [2, 2, 2, 2, 3, 3, 5, 5]
    rows = [np.full((1 + i % 2, 4), i, dtype=np.float32) for i in range(8)]
    results, barrier = [None] * 8, threading.Barrier(8)

    def one(i):
        barrier.wait()
        results[i] = agent.infer({"x": rows[i], "k": np.array(ks[i], np.int64)})["y"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], rows[i] * ks[i])
    assert all(shapes["k"] == () for shapes in runs)  # the scalar went in as a scalar, every time
    assert len(runs) < 8  # equal scalars shared calls ...
    assert len(runs) >= 3  # ... different ones never did (three values of k)
    agent.close()
