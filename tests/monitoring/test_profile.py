"""`edgeship fleet profile` against a real agent over a real mosquitto: the bench's cell loop on
the device while it keeps serving, a chunked result verified complete, read by `bench compare`
like a local result; refusals that name why."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from monhelpers import AgentProcess, env

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.telemetry import ProfileAssembly, profile_chunks
from toolchain.fleet.localbroker import MOSQUITTO, Broker

pytestmark = pytest.mark.mqtt
FAST = ["--min-iters", "40", "--min-duration", "0.4", "--warmup-s", "0.1"]


def test_chunks_are_verified_complete_and_intact():
    result = {"cells": [{"samples_s": list(range(5000))}], "x": "y" * 1000}
    chunks = profile_chunks("p1", result, chunk_bytes=1024)
    assert len(chunks) > 3 and {c["count"] for c in chunks} == {len(chunks)}
    asm = ProfileAssembly("p1")
    for c in reversed(chunks[1:]):  # out of order, one missing
        assert not asm.add(c)
    assert asm.missing == [0]
    with pytest.raises(PayloadRejected, match="missing"):
        asm.result()
    assert asm.add(chunks[0]) and asm.result() == result
    bad = ProfileAssembly("p1")
    for c in chunks:
        bad.add(dict(c, data=c["data"]) if c["index"] else dict(c, data=chunks[1]["data"]))
    with pytest.raises(PayloadRejected, match="sha256"):
        bad.result()
    assert not ProfileAssembly("other").add(chunks[0])


def test_plan_refuses_naming_why(tmp_path, tiny_bundle):
    from device_agent.profiling import ProfileRefused, plan
    from device_agent.store import Store

    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(tiny_bundle).sha256)
    ok = plan(store, {"profile_id": "p1", "threads": [1, 2]}, busy=None, available_bytes=None)
    assert ok.threads == (1, 2) and ok.artifact_id == "onnxruntime-fp32" and Path(ok.model_path).is_file()
    for body, busy, avail, code in [
        ({"profile_id": "p1"}, "an update is running", None, "busy.updating"),
        ({"profile_id": "p1"}, "profile p0 is running", None, "busy.profiling"),
        ({"profile_id": "p1", "model": "nope"}, None, None, "profile.model_not_found"),
        ({"profile_id": "p1", "sha256": "0" * 64}, None, None, "profile.model_not_found"),
        ({"profile_id": "p1"}, None, 10 << 20, "profile.memory_short"),
        ({"profile_id": "p 1"}, None, None, "profile.bad_request"),
        ({"profile_id": "p1", "threads": [0]}, None, None, "profile.bad_request"),
        ({"profile_id": "p1", "preset": "forever"}, None, None, "profile.bad_request"),
    ]:
        with pytest.raises(ProfileRefused) as e:
            plan(store, body, busy=busy, available_bytes=avail)
        assert e.value.reason_code == code, (body, e.value)


@pytest.fixture
def device(tmp_path, tiny_bundle):
    """A real agent with [mqtt] that trusts the operator key of a fresh `edgeship keys init`;
    yields it, the broker and the broker + --keys flags of the operator's commands."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found")
    from toolchain.ota.keys import init_keys

    keys = tmp_path / "keys"
    root = init_keys(keys_dir=keys)
    broker = Broker(str(tmp_path / "broker")).start()
    a = AgentProcess(tmp_path / "agent", tiny_bundle,
                     extra_toml=f'\n[mqtt]\nfleet = "lab"\ndevice_id = "pi-1"\nport = {broker.port}\n'
                                f'operator_root = "{root}"\n').start()
    yield a, broker, ["--broker", f"127.0.0.1:{broker.port}", "--keys", str(keys)]
    a.stop()
    broker.stop()


def _cli(*argv, timeout=300, env_keys=None):
    e = env()
    e.pop("EDGESHIP_KEYS", None)
    return subprocess.run([sys.executable, "-m", "toolchain.cli", *argv], env=e, capture_output=True,
                          text=True, timeout=timeout)


def test_profile_on_the_device_while_it_serves_and_compare_with_a_desk_run(device, tmp_path):
    from toolchain.bench import result as result_mod
    from toolchain.demo_ota import make_tiny_build

    a, broker, b = device
    served, failed, stop = [0], [0], threading.Event()

    def traffic():
        with httpx.Client() as c:
            while not stop.is_set():
                r = c.post(a.url + "/v2/models/tiny/infer", json={"inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]})
                served[0] += r.status_code == 200
                failed[0] += r.status_code != 200

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        out = tmp_path / "device-profile"
        p = _cli("fleet", "profile", "--fleet", "lab", "--device", "pi-1", "--model", "tiny", "--threads", "1,2",
                 *FAST, "-o", str(out), *b)
        busy_served = served[0]
    finally:
        stop.set()
        t.join(10)
    assert p.returncode == 0, p.stdout + p.stderr
    assert busy_served > 20 and failed[0] == 0  # serving never stopped
    res = result_mod.load(out / "result.json")
    assert res["source"]["kind"] == "device_profile" and res["source"]["path"] == "lab/pi-1"
    assert [c["key"] for c in res["cells"]] == ["onnxruntime-fp32__b1_t1_s1", "onnxruntime-fp32__b1_t2_s1"]
    assert all(c["status"] == "ok" and c["stats"]["count"] >= 40 for c in res["cells"])
    assert res["environment"]["measured_on"].startswith("device lab/pi-1") and res["environment"]["cpu_model"]
    assert (out / "report.md").exists() and (out / "report.html").exists()
    desk_build = make_tiny_build(tmp_path / "desk-build")
    desk = _cli("bench", str(desk_build), "--threads", "1", "--min-iters", "40", "--min-duration", "0.4",
                "--warmup-s", "0.1", "-o", str(tmp_path / "desk"), "-q")
    assert desk.returncode == 0, desk.stderr
    cmp = _cli("bench", "compare", str(tmp_path / "desk" / "result.json"), str(out / "result.json"), "--json")
    assert cmp.stdout, cmp.stderr
    doc = json.loads(cmp.stdout)
    assert cmp.returncode in (0, 1) and doc["missing_in_new"] == [] and doc["new_only"] == ["onnxruntime-fp32__b1_t2_s1"]
    assert len(doc["regressions"] + doc["improvements"] + doc["same"]) == 1


def test_refusals_over_mqtt(device, tmp_path):
    a, broker, b = device
    unsigned = _cli("fleet", "profile", "--fleet", "lab", "--device", "pi-1", *FAST, "--broker",
                    f"127.0.0.1:{broker.port}", env_keys=None)
    assert unsigned.returncode == 2 and "--keys" in unsigned.stderr  # commands are signed
    p = _cli("fleet", "profile", "--fleet", "lab", "--device", "pi-1", "--model", "resnet50", *FAST, *b)
    assert p.returncode == 1 and "not on this device" in p.stderr and "[profile.model_not_found]" in p.stderr
    first = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "fleet", "profile", "--fleet", "lab", "--device",
                              "pi-1", "--min-iters", "400", "--min-duration", "3", "-o", str(tmp_path / "p1"), *b],
                             env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        accepted = first.stderr.readline()  # printed once the device accepted the first profile
        assert "profiling tiny r1" in accepted, accepted
        second = _cli("fleet", "profile", "--fleet", "lab", "--device", "pi-1", *FAST, *b)
        assert second.returncode == 1 and "[busy.profiling]" in second.stderr, second.stderr
    finally:
        out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err


def test_the_runner_refuses_while_an_update_or_a_deployment_runs(tmp_path, tiny_bundle):
    """The command handler's wiring of ``busy``: a real Updater holding its update lock (as it does
    for the whole of an update or recovery), then a deployment the MQTT host reports running."""
    from types import SimpleNamespace

    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.mqtt.profile_cmd import ProfileRunner
    from device_agent.ota.updater import Updater
    from device_agent.store import Store

    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(tiny_bundle).sha256)
    cfg = AgentConfig.for_state_dir(tmp_path / "state")
    agent = Agent(cfg)
    try:
        updater = Updater(cfg, store, agent)
        sent = []
        runner = ProfileRunner(agent, updater, lambda kind, body, pid: sent.append(pid))
        idle = SimpleNamespace(running_deployment=lambda: None)
        with updater._lock:  # an update is under way
            ok, code, detail, _ = runner.handle(idle, {"profile_id": "p1"})
        assert (ok, code) == (False, "busy.updating") and "update" in detail
        deploying = SimpleNamespace(running_deployment=lambda: SimpleNamespace(deployment_id="d-7"))
        ok, code, detail, _ = runner.handle(deploying, {"profile_id": "p1"})
        assert (ok, code) == (False, "busy.updating") and "d-7" in detail
        ok, code, detail, _ = runner.handle(idle, {"profile_id": "p1", "model": "nope"})
        assert (ok, code) == (False, "profile.model_not_found") and "nope" in detail
        assert sent == [] and runner._running is None  # nothing started, nothing sent
    finally:
        agent.close()
