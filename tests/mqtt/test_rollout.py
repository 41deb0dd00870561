"""Staged rollouts through a real mosquitto, with real agents (Agent + Updater + TUF
repository) and the fleet simulator: a rollout that advances, one that pauses on install
failures, one that pauses on a latency regression while install health is perfect, one that
pauses when the new release's devices raise drift alarms (the simulator's telemetry/drift), a fleet
rollback, garbage reports, offline devices, a broker restart. The killed controller and
bad input are in test_rollout_cli.py."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from mqtt_helpers import wait_for
from toolchain.fleet.client import BrokerSettings

pytestmark = pytest.mark.mqtt

FAST = {"bake_s": 1.0, "min_requests": 60, "min_device_s": 2.0, "min_windows": 3, "install_timeout_s": 20.0,
        "min_sample": 2}


@pytest.fixture
def fleet(broker, operator_keys, tmp_path):
    """Start simulated devices and controllers; stop them at the end."""
    from runtime.contracts.mqtt.signing import OperatorKeys
    from toolchain.fleet.sim.behaviour import SimBehaviour
    from toolchain.fleet.sim.fleet import SimFleet

    keys = OperatorKeys.from_root(json.loads(operator_keys.root.read_text()))
    sims, threads = [], []

    class F:
        settings = BrokerSettings(port=broker.port)

        def sim(self, n, *, release_behaviour=None, **kw):
            b = SimBehaviour(seed=11, metrics_interval_s=0.25, install_s=0.2, requests_per_s=40.0, **kw)
            for r, rb in (release_behaviour or {}).items():
                b = b.with_release(r, **rb)
            s = SimFleet(n=n, fleet="f1", settings=self.settings, keys=keys, model="tiny", release=1,
                         behaviour=b).start()
            sims.append(s)
            return s

        def start(self, *, waves, target=None, criteria=None, rid="ro-1", concurrency=20, assignment=None):
            """Plan, resolve, journal and run a controller in a thread; returns (controller, done event)."""
            from toolchain.fleet.client import FleetClient
            from toolchain.fleet.rollout.cohort import assign_waves, resolve_targets
            from toolchain.fleet.rollout.controller import Controller
            from toolchain.fleet.rollout.journal import Journal
            from toolchain.fleet.rollout.machine import RolloutState
            from toolchain.fleet.rollout.plan import build

            plan = build({"id": rid, "fleet": "f1", "model": "tiny", "release": 2, "concurrency": concurrency,
                          "target": target or {"group": "sim"}, "criteria": {**FAST, **(criteria or {})},
                          "wave": [w if isinstance(w, dict) else {"size": w} for w in waves]}, {}, where="test")
            expect = sum(len(s.devices) for s in sims)
            with FleetClient(self.settings) as fc:   # every simulated device's retained state is in
                views = wait_for(lambda: len(v := fc.snapshot("f1", settle_s=0.3)) >= expect and v)
            st = RolloutState(plan=plan, waves=assignment or assign_waves(plan, resolve_targets(plan, views)))
            journal = Journal(tmp_path / "journals", plan.id)
            journal.save(st)
            ctl = Controller(st, journal=journal, settings=self.settings, signer=operator_keys.signer,
                             operator_keys=keys, tick_s=0.1, say=lambda line: None)
            stop, done = threading.Event(), threading.Event()
            ctl.stop = stop

            def run():
                try:
                    ctl.run(stop, settle_s=0.5)
                finally:
                    done.set()

            t = threading.Thread(target=run, daemon=True)
            t.start()
            threads.append((stop, t))
            return ctl, done

    yield F()
    for stop, t in threads:
        stop.set()
        t.join(10)
    for s in sims:
        s.stop()


def _on(sim, release):
    return sorted(d for d, dev in sim.devices.items() if dev.release == release)


# ------------------------------------------------------------------ real agents beside the simulator
@pytest.fixture
def real_agents(tmp_path, make_device, tiny_bundles, operator_keys):
    """Two real agents (Agent + Updater on a real TUF repository), release 1 active, group sim."""
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.ota import UpdateSection, Updater
    from device_agent.store import Store

    repo = tmp_path / "repo"
    from toolchain.cli import main as edgeship

    for r in (1, 2):
        assert edgeship(["publish", str(tiny_bundles[r].path), "--repo", str(repo), "--keys", str(operator_keys.dir), "--init"]) == 0
    agents = {}
    for name in ("real-a", "real-b"):
        state = tmp_path / name
        store = Store(state)
        store.activate(store.install_bundle(tiny_bundles[1].path).sha256)
        (state / "trust").mkdir()
        shutil.copy(operator_keys.root, state / "trust" / "root.json")
        agent = Agent(AgentConfig.for_state_dir(state))
        up = Updater(agent.config, agent.store, agent, update_config=UpdateSection(
            repository_url=str(repo), trial_requests=5, trial_duration_s=0.5, trial_probe_interval_s=0.02,
            trial_min_requests=2))
        make_device(agent, up, device=name, groups=("sim",), metrics_interval_s=0.25, heartbeat_s=1.0)
        agents[name] = agent
    yield agents
    for a in agents.values():
        a.close()


def test_rollout_advances_over_real_agents_and_simulated_devices(fleet, real_agents):
    sim = fleet.sim(10)
    ctl, done = fleet.start(waves=[2, "rest"])
    assert done.wait(90), ctl.st.reason
    st = ctl.st
    assert st.status.value == "completed", st.reason
    assert _on(sim, 2) == sorted(sim.devices)
    assert all(a.status()["active"]["release"] == 2 for a in real_agents.values())
    assert sum(r["state"] == "committed" for r in st.results.values()) == 12
    assert {len(w) for w in st.waves} == {2, 10} and not st.breaches
    assert st.verdicts["model"]["state"] == "ok"                  # judged with enough data at the end


def test_rollout_pauses_on_install_failures_and_names_the_devices(fleet):
    sim = fleet.sim(20, release_behaviour={2: {"gate_fail_share": 0.5}})
    ctl, done = fleet.start(waves=[4, "rest"], criteria={"max_failure_pct": 30})
    wait_for(lambda: ctl.st.status.value == "paused", timeout_s=30)
    st = ctl.st
    assert st.breaches[0]["kind"] == "install" and st.wave == 0
    failed = sorted(d for d, r in st.results.items() if r["state"] == "failed")
    assert failed and all(st.results[d]["reason"] == "gate.tolerance" for d in failed)
    assert set(failed) <= {d for d in sim.devices if sim.behaviour.gate_fails(d, 2)}
    assert len(st.assigned) <= 4                                   # wave 2 never started
    time.sleep(0.5)
    assert len(st.assigned) <= 4


def test_rollout_pauses_on_a_latency_regression_while_install_health_is_perfect(fleet):
    sim = fleet.sim(20, release_behaviour={2: {"latency_factor": 2.0}})
    ctl, done = fleet.start(waves=[3, "rest"], criteria={"bake_s": 5.0})
    wait_for(lambda: ctl.st.status.value == "paused", timeout_s=30)
    st = ctl.st
    assert [b["kind"] for b in st.breaches] == ["model"]
    assert "p95 latency" in st.breaches[0]["reasons"][0]
    assert st.breaches[0]["values"]["p95"]["ratio"] > 1.6
    res = [st.results[d]["state"] for d in st.waves[0]]
    assert res == ["committed"] * 3                                 # install health perfect
    assert len(_on(sim, 2)) == 3


def test_rollout_pauses_when_the_new_release_drifts_naming_drift(fleet):
    """Every device on release 2 sees drifting inputs (its drift alarm raises after 3 checks);
    latency, errors and installs are as healthy as release 1's: the drift criterion pauses."""
    sim = fleet.sim(16, drift_baseline=True, release_behaviour={2: {"drift_share": 1.0}})
    ctl, done = fleet.start(waves=[4, "rest"], criteria={"bake_s": 5.0, "max_drift_alarm_share_delta": 0.2,
                                                         "min_drift_devices": 3})
    wait_for(lambda: ctl.st.status.value == "paused", timeout_s=45)
    st = ctl.st
    assert [b["criteria"] for b in st.breaches] == [["drift"]], st.breaches
    assert "drift alarms on 4/4 devices of the new release vs 0/12" in st.reason, st.reason
    drift = st.breaches[0]["values"]["drift"]
    assert drift["new"] == 1.0 and drift["control"] == 0.0 and drift["psi_max_mean"]["new"] > 0.25
    assert [st.results[d]["state"] for d in st.waves[0]] == ["committed"] * 4       # install health perfect
    assert len(_on(sim, 2)) == 4                                                    # wave 2 never started
    assert sim.stats.published["event"] >= 4                                       # drift.psi alarm events


def test_a_drift_criterion_on_a_fleet_without_drift_reports_does_not_pass_unjudged(fleet):
    fleet.sim(8)                                   # devices whose bundles carry no drift baseline
    ctl, done = fleet.start(waves=[2, "rest"], criteria={"bake_s": 1.0, "max_bake_s": 3.0,
                                                         "max_drift_alarm_share_delta": 0.2})
    wait_for(lambda: ctl.st.status.value == "paused", timeout_s=45)
    assert "inconclusive" in ctl.st.reason and "drift report 0/0 < 3" in ctl.st.reason, ctl.st.reason


def test_fleet_rollback_moves_real_and_simulated_devices_back(fleet, real_agents):
    sim = fleet.sim(6, release_behaviour={2: {"error_rate": 0.2}})
    # wave 1: the real agents (no traffic here, so no model verdict: bake 0); wave 2: the simulated
    # devices, whose error rate on release 2 triggers the plan's fleet rollback
    ctl, done = fleet.start(waves=[{"size": 2, "bake_s": 0.0}, {"size": "rest", "bake_s": 5.0}],
                            criteria={"on_model_regression": "rollback"},
                            assignment=[sorted(real_agents), sorted(sim.devices)])
    assert done.wait(90), ctl.st.reason
    st = ctl.st
    assert st.status.value == "rolled_back", st.reason
    assert st.breaches[0]["kind"] == "model" and "error rate" in st.breaches[0]["reasons"][0]
    assert _on(sim, 1) == sorted(sim.devices) and _on(sim, 2) == []
    for a in real_agents.values():                                 # signed return to a release it ran before
        assert a.status()["active"]["release"] == 1 and a.status()["previous"]["release"] == 2
    assert set(st.rollback) == set(sim.devices) | set(real_agents)


def test_garbage_reports_are_failures_named_and_the_controller_goes_on(fleet, operator):
    sim = fleet.sim(8)
    junk = {"junk-1": b"\xff not json",
            "junk-2": json.dumps({"applied_version": 1, "active": {"name": "tiny", "release": "two"}}).encode(),
            "junk-3": json.dumps({"applied_version": 0, "last_deployment": {"state": "exploded"}}).encode()}
    for d, raw in junk.items():                                    # in the group, but what they report is garbage
        operator.publish(f"edgeship/v1/f1/{d}/status", json.dumps({"online": True, "groups": ["sim"]}).encode(),
                         retain=True)
        operator.publish(f"edgeship/v1/f1/{d}/reported", raw, retain=True)
    operator.publish("edgeship/v1/f1/sim-0004/telemetry/metrics", json.dumps({"requests": 5, "errors": 9}).encode(),
                     retain=False)
    ctl, done = fleet.start(waves=["100%"], criteria={"max_failure_pct": 100, "min_sample": 5, "min_success_pct": 50})
    assert done.wait(60), ctl.st.reason
    st = ctl.st
    assert st.status.value == "completed", st.reason
    for d in junk:
        assert st.results[d]["state"] == "failed" and st.results[d]["reason"].startswith("report.invalid: reported"), \
            st.results[d]
    assert sum(r["state"] == "committed" for r in st.results.values()) >= 7
    from toolchain.fleet.rollout.status import render, summary

    text = render(summary(st, ctl.view, int(time.time() * 1000)))
    assert all(d in text for d in junk) and "report.invalid" in text


def test_offline_devices_get_the_current_desired_state_on_return_or_nothing_once_aborted(fleet, operator,
                                                                                          operator_keys):
    from runtime.contracts.mqtt.signing import Addressee
    from runtime.contracts.mqtt.topics import rollout_topic
    from toolchain.fleet.rollout.controller import CONTROL_SCHEMA

    sim = fleet.sim(10)
    away = ["sim-0001", "sim-0002"]
    for d in away:
        sim.set_offline(d)
    ctl, done = fleet.start(waves=["100%"], target={"devices": sorted(sim.devices)},
                            criteria={"install_timeout_s": 60.0, "bake_s": 30.0, "max_failure_pct": 90})
    wait_for(lambda: len(_on(sim, 2)) == 8, timeout_s=20)
    sim.set_online(away[0])                                        # returns during the rollout: converges
    wait_for(lambda: sim.devices[away[0]].release == 2, timeout_s=10)
    raw = operator_keys.signer.sign_schema(schema=CONTROL_SCHEMA, leaf="control", to=Addressee("f1", rollout="ro-1"),
                                           body={"action": "abort"}, expires_s=60)
    operator.publish(rollout_topic(fleet="f1", rollout="ro-1", leaf="control"), raw, retain=True)
    assert done.wait(10) and ctl.st.status.value == "aborted"
    assert ctl.st.cleared == [away[1]]                             # never accepted: its order is withdrawn
    held = operator.retained("f1", away[1], settle_s=0.3)
    assert f"edgeship/v1/f1/{away[1]}/desired" not in held
    sim.set_online(away[1])                                        # comes back after the abort: nothing
    time.sleep(1.0)
    assert sim.devices[away[1]].release == 1 and sim.devices[away[1]].applied_version == 0


def test_broker_restart_during_a_rollout_loses_nothing(fleet, broker):
    sim = fleet.sim(12)
    ctl, done = fleet.start(waves=[2, "rest"], criteria={"bake_s": 2.0}, concurrency=4)
    wait_for(lambda: len(ctl.st.assigned) >= 4, timeout_s=20)
    broker.restart()                                               # persistence on: retained state survives
    assert done.wait(90), ctl.st.reason
    assert ctl.st.status.value == "completed", ctl.st.reason
    assert _on(sim, 2) == sorted(sim.devices)
