"""The gate's memory policy, with a simulated memory: available = total - resident size of the
sessions the agent has open. `refuse` fails the update; `unload_first` unloads the old model,
gates the new one alone, and reloads the old one when the gate fails."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from device_agent.agent import NotReadyError
from device_agent.ota import Reason, State
from device_agent.ota.config import MemoryPolicy
from device_agent.ota.errors import GateMemoryError
from device_agent.ota.gate import MemoryPlan, memory_plan, model_file_bytes

from .conftest import GOLDEN_X


class SimulatedMemory:
    """``total`` bytes minus ``load_factor`` x file bytes of every model the agent has open."""

    def __init__(self, store, agent, total: int, load_factor: float = 2.0) -> None:
        self.store, self.agent, self.total, self.factor = store, agent, total, load_factor
        self.seen_unloaded = 0  # calls made while no model was being served

    def resident(self, sha: str) -> int:
        return int(model_file_bytes(self.store.info(sha)) * self.factor)

    def __call__(self) -> int:
        if self.agent.current() is None:
            self.seen_unloaded += 1
        return self.total - sum(self.resident(s) for s in self.agent.in_use())


def _device(env, policy: MemoryPolicy, kind: str, slack: int, bundle_kw=None, **cfg_kw):
    """Publish release 2 (``kind``) and a device whose memory holds one model but not both
    (``slack`` = bytes over the sum of both minus one; negative: not even the new one alone)."""
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.store import Store
    from device_agent.ota import Updater

    from runtime.contracts.bundle import read_bundle_info

    bundle = env.bundle(release=2, kind=kind, **(bundle_kw or {}))
    pub = env.publish(bundle)
    cfg, store = AgentConfig.for_state_dir(env.state), Store(env.state)
    agent = Agent(cfg, store=store)
    mem = SimulatedMemory(store, agent, 0)
    old, new = store.active().sha256, pub.sha256
    mem.total = mem.resident(old) + int(model_file_bytes(read_bundle_info(bundle)) * 2.0) - 1 + slack
    up = Updater(cfg, store, agent, available_bytes=mem,
                 update_config=env.update_cfg(memory_policy=policy, memory_reserve_bytes=0, **cfg_kw))
    return store, agent, up, mem, old, new


def test_plan_is_pure_and_follows_the_policy(env):
    from device_agent.ota.config import UpdateSection

    refuse = UpdateSection(memory_reserve_bytes=100, memory_load_factor=2.0)
    unload = UpdateSection(memory_reserve_bytes=100, memory_load_factor=2.0, memory_policy=MemoryPolicy.UNLOAD_FIRST)
    assert memory_plan(model_bytes=50, available_bytes=200, loaded_bytes=50, cfg=refuse) is MemoryPlan.FITS
    with pytest.raises(GateMemoryError, match="unload_first"):
        memory_plan(model_bytes=50, available_bytes=199, loaded_bytes=50, cfg=refuse)
    assert memory_plan(model_bytes=50, available_bytes=199, loaded_bytes=50, cfg=unload) is MemoryPlan.UNLOAD_FIRST
    assert memory_plan(model_bytes=50, available_bytes=100, loaded_bytes=50, cfg=unload) is MemoryPlan.UNLOAD_FIRST
    with pytest.raises(GateMemoryError, match="frees only"):
        memory_plan(model_bytes=50, available_bytes=99, loaded_bytes=50, cfg=unload)
    with pytest.raises(GateMemoryError):  # nothing loaded: nothing to unload
        memory_plan(model_bytes=50, available_bytes=199, loaded_bytes=0, cfg=unload)


def test_refuse_keeps_the_old_model_serving(env):
    store, agent, up, mem, old, new = _device(env, MemoryPolicy.REFUSE, "good2", 0)
    try:
        res = up.update("m")
        assert (res.state, res.reason) == (State.FAILED, Reason.GATE_MEMORY), res
        assert "unload_first" in res.detail
        assert mem.seen_unloaded == 0 and agent.current().ref.sha256 == old == store.active().sha256
    finally:
        agent.close()


def test_unload_first_swaps_through_a_short_503_window(env):
    store, agent, up, mem, old, new = _device(env, MemoryPolicy.UNLOAD_FIRST, "good2", 0)
    outcomes: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                agent.infer({"x": GOLDEN_X[0]})
                outcomes.append("ok")
            except NotReadyError as e:
                assert e.retry_after_s == 1.0 and "making room" in str(e)
                outcomes.append("retry")

    t = threading.Thread(target=load)
    t.start()
    try:
        res = up.update("m")
    finally:
        stop.set()
        t.join(10)
        agent.close()
    assert (res.state, res.reason) == (State.COMMIT, Reason.OK), (res, up.last_error)
    assert mem.seen_unloaded >= 1  # the gate checked memory with the old model unloaded
    assert store.active().sha256 == new and store.previous().sha256 == old
    assert outcomes.count("ok") > 0 and set(outcomes) <= {"ok", "retry"}


def test_unload_first_reloads_the_old_model_when_the_gate_fails(env):
    store, agent, up, mem, old, new = _device(env, MemoryPolicy.UNLOAD_FIRST, "nan", 0)
    try:
        res = up.update("m")
        assert (res.state, res.reason) == (State.FAILED, Reason.GATE_NAN), res
        assert mem.seen_unloaded >= 1
        assert agent.current().ref.sha256 == old == store.active().sha256
        np.testing.assert_allclose(agent.infer({"x": GOLDEN_X[0]})["y"], GOLDEN_X[0] * 2 + 1, rtol=1e-6)
        assert agent.status()["unloaded"] is None
    finally:
        agent.close()


def test_unload_first_rolls_back_a_failed_trial_by_unloading_the_new_model_first(env):
    store, agent, up, mem, old, new = _device(env, MemoryPolicy.UNLOAD_FIRST, "slow", 0,
                                              bundle_kw={"latency_budget_ms": 0.5}, gate_latency_factor=1e6,
                                              trial_latency_factor=2.0, trial_requests=4)
    unloads = []
    real_unload = agent.unload

    def recording_unload(**kw):
        unloads.append((kw["reason"], agent.current().ref.sha256, sorted(agent.in_use())))
        return real_unload(**kw)

    agent.unload = recording_unload
    try:
        res = up.update("m")
        assert (res.state, res.reason) == (State.ROLLED_BACK, Reason.TRIAL_LATENCY), (res, up.last_error)
        assert [(why.split()[0], sha) for why, sha, _ in unloads] == [("making", old), ("rolling", new)]
        assert all(len(live) == 1 for _, _, live in unloads)  # never two models resident
        assert agent.current().ref.sha256 == old == store.active().sha256
    finally:
        agent.close()


def test_unload_first_refuses_what_would_not_fit_even_alone(env):
    store, agent, up, mem, old, new = _device(env, MemoryPolicy.UNLOAD_FIRST, "good2", -10**6)
    try:
        res = up.update("m")
        assert (res.state, res.reason) == (State.FAILED, Reason.GATE_MEMORY), res
        assert "frees only" in res.detail
        assert mem.seen_unloaded == 0 and agent.current().ref.sha256 == old
    finally:
        agent.close()


def test_http_answers_503_with_retry_after_while_unloaded(env):
    from starlette.testclient import TestClient

    from device_agent.serving.http import create_app

    store, agent, _ = env.device()
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": GOLDEN_X[0].ravel().tolist()}]}
    try:
        with TestClient(create_app(agent)) as c:
            assert c.post("/v2/models/m/infer", json=body).status_code == 200
            assert agent.unload(reason="making room for a test", retry_after_s=2.5).release == 1
            r = c.post("/v2/models/m/infer", json=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "3", (r.status_code, r.headers)
            assert "making room for a test" in r.json()["error"]
            assert c.get("/v2/health/ready").status_code == 503
            agent.reload_pointers()
            assert c.post("/v2/models/m/infer", json=body).status_code == 200
    finally:
        agent.close()
