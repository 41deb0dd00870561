"""Against a real mosquitto: birth, reported, desired-state convergence, commands, bad input."""

from __future__ import annotations

import json

from mqtt_helpers import LogCapture, wait_for
from runtime.contracts.mqtt.messages import Kind
from runtime.contracts.mqtt.payloads import Desired
from runtime.contracts.mqtt.topics import device_topics
from mqtt_sim import SimAgent, SimUpdater
import pytest

pytestmark = pytest.mark.mqtt

T = device_topics(fleet="f1", device="d1")


def collect(operator, pred, timeout_s=10.0):
    """Messages until ``pred(list)`` is true."""
    got = []
    for m in operator.messages(timeout_s=timeout_s):
        got.append(m)
        if pred(got):
            return got
    raise AssertionError(f"timed out; got {[(m.topic, m.payload[:120], (m.json() or {}).get('reason_code')) for m in got]}")


def deploy_states(msgs, dep):
    return [m.json()["state"] for m in msgs if m.topic == T.deploy(dep)]


def desired(version, dep, release, model="demo"):
    return Desired(version=version, deployment_id=dep, model=model, release=release)


def test_birth_and_reported_are_retained_with_envelope(make_device, operator):
    agent = SimAgent()
    make_device(agent, SimUpdater(agent), groups=("lab",))
    view = wait_for(lambda: (v := operator.snapshot("f1", settle_s=0.3).get("d1")) and v.reported and v)
    st = view.status
    assert st["online"] is True and st["groups"] == ["lab"] and st["active"]["release"] == 1
    assert st["agent_version"] == "0.1.0" and st["engines"] == ["onnxruntime"]
    for key in ("schema", "device", "boot_id", "msg_id", "ts_ms", "mono_ms", "seq", "hist"):
        assert key in st and key in view.reported
    assert st["seq"] == 0 and view.reported["seq"] == 1 and view.reported["msg_id"] > st["msg_id"]
    assert view.reported["applied_version"] == 0


def test_desired_converges_ignores_duplicates_and_older_versions(make_device, operator, tmp_path):
    agent = SimAgent()
    up = SimUpdater(agent)
    svc = make_device(agent, up)
    operator.subscribe(T.base + "/deploy/+", T.reported)
    operator.publish_desired("f1", "d1", desired(5, "dep-a", 2))
    msgs = collect(operator, lambda g: "commit" in deploy_states(g, "dep-a"))
    assert deploy_states(msgs, "dep-a") == ["accepted", "fetch", "verify", "stage", "gate", "switch", "trial", "commit"]
    assert agent.active["release"] == 2
    # duplicate (same version) and an older version with another release: both read and ignored
    with LogCapture() as log:
        operator.publish_desired("f1", "d1", desired(5, "dep-a", 2))
        operator.publish_desired("f1", "d1", desired(4, "dep-old", 3))
        wait_for(lambda: {"desired version 5 ignored", "desired version 4 ignored"}
                 <= {m.split(" (")[0] for m in log.messages()})
    assert [c[2] for c in up.calls] == ["dep-a"] and agent.active["release"] == 2
    wait_for(lambda: svc.state.last_deployment["state"] == "commit")
    assert svc.state.applied_version == 5
    # the device goes away; the operator writes a newer version meanwhile; on restart it converges
    svc.stop(timeout_s=1)
    st = operator.snapshot("f1", settle_s=0.3)["d1"].status
    assert st["online"] is False and st["reason"] == "shutdown"       # a clean stop says so itself
    operator.publish_desired("f1", "d1", desired(6, "dep-b", 3))
    up2 = SimUpdater(agent)
    svc2 = make_device(agent, up2, queue_dir=svc.config.queue_dir)
    wait_for(lambda: svc2.state.last_deployment and svc2.state.last_deployment.get("deployment_id") == "dep-b"
             and svc2.state.last_deployment["state"] == "commit")
    assert agent.active["release"] == 3 and [c[2] for c in up2.calls] == ["dep-b"]
    # and a restart with the same retained desired does not redeploy
    svc2.stop(timeout_s=1)
    up3 = SimUpdater(agent)
    with LogCapture() as log:
        svc3 = make_device(agent, up3, queue_dir=svc.config.queue_dir)
        # the broker hands the retained desired v6 to the new session: read, and ignored as applied
        wait_for(lambda: any(m.startswith("desired version 6 ignored") for m in log.messages()))
    assert up3.calls == [] and svc3.state.applied_version == 6


def test_already_active_release_commits_without_update(make_device, operator):
    agent = SimAgent(release=4)
    up = SimUpdater(agent)
    make_device(agent, up)
    operator.subscribe(T.base + "/deploy/+")
    operator.publish_desired("f1", "d1", desired(1, "dep-same", 4))
    msgs = collect(operator, lambda g: "commit" in deploy_states(g, "dep-same"))
    assert up.calls == [] and "release already active" in msgs[-1].json()["detail"]


def test_failed_trial_is_reported_as_rejected_with_reason(make_device, operator):
    agent = SimAgent()
    svc = make_device(agent, SimUpdater(agent, fail={2: ("trial", "trial.error_rate")}))
    operator.subscribe(T.base + "/deploy/+", T.events)
    operator.publish_desired("f1", "d1", desired(1, "dep-bad", 2))
    msgs = collect(operator, lambda g: any(m.topic == T.events for m in g) and "rolled_back" in deploy_states(g, "dep-bad"))
    ev = next(m.json() for m in msgs if m.topic == T.events)
    assert ev["category"] == "trial" and ev["reason_code"] == "trial.error_rate"
    view = wait_for(lambda: (v := operator.snapshot("f1", settle_s=0.3)["d1"]).reported["rejected"] and v)
    rej = view.reported["rejected"][0]
    assert (rej["release"], rej["state"], rej["reason_code"]) == (2, "rolled_back", "trial.error_rate")
    assert view.reported["last_deployment"]["state"] == "rolled_back"
    assert svc.state.applied_version == 1


def test_commands_answer_with_correlation_and_rollback(make_device, operator):
    agent = SimAgent()
    agent.switch("demo", 2)
    make_device(agent)
    r = operator.command("f1", "d1", "rollback", timeout_s=10)
    assert r["ok"] is True and r["result"]["active"]["release"] == 1 and agent.active["release"] == 1
    view = wait_for(lambda: (v := operator.snapshot("f1", settle_s=0.3)["d1"]).reported["active"]["release"] == 1 and v)
    assert view.status["active"]["release"] == 1
    r = operator.command("f1", "d1", "cancel")
    assert r["ok"] is False and r["reason_code"] == "cancel.nothing_running"
    r = operator.command("f1", "d1", "rebirth")
    assert r["ok"] is True
    r = operator.command("f1", "d1", "selfdestruct")
    assert r["ok"] is False and r["reason_code"] == "cmd.unknown"


def test_cancel_aborts_a_running_deployment(make_device, operator):
    agent = SimAgent()
    make_device(agent, SimUpdater(agent, step_s=0.5))
    operator.subscribe(T.base + "/deploy/+")
    operator.publish_desired("f1", "d1", desired(1, "dep-slow", 2))
    collect(operator, lambda g: "fetch" in deploy_states(g, "dep-slow"))
    r = operator.command("f1", "d1", "cancel", {"deployment_id": "dep-slow"})
    assert r["ok"] is True
    msgs = collect(operator, lambda g: "aborted" in deploy_states(g, "dep-slow"))
    assert agent.active["release"] == 1 and "commit" not in deploy_states(msgs, "dep-slow")


def test_malformed_and_oversized_control_payloads_are_rejected_and_reported(make_device, operator):
    agent = SimAgent()
    up = SimUpdater(agent)
    svc = make_device(agent, up, max_control_payload_bytes=2048)
    operator.subscribe(T.events)
    from runtime.contracts.mqtt.signing import Addressee

    signer = operator.signer
    to = Addressee("f1", device="d1")
    bad_docs = [b"{nope", signer.sign(kind=Kind.DESIRED, leaf="desired", to=to,
                                      body={"schema": "edgeship.desired/1", "version": 1}, expires_s=60),
                signer.desired(Desired(1, "dep-x" + "x" * 5000, "demo", 2), to=to)]
    for raw in bad_docs:
        operator.publish(T.desired, raw, retain=True)
    r = operator.command("f1", "d1", "rollback", b"\x00" * 4096)
    assert r["ok"] is False and r["reason_code"] == "payload.too_large"
    r = operator.command("f1", "d1", "rollback", b"[1")
    assert r["ok"] is False and r["reason_code"] == "payload.not_json"
    msgs = collect(operator, lambda g: len([m for m in g if m.topic == T.events]) >= 5)
    codes = [m.json()["reason_code"] for m in msgs if m.topic == T.events]
    assert codes.count("payload.not_json") == 2 and codes.count("payload.schema") == 1
    assert codes.count("payload.too_large") == 2
    assert up.calls == [] and svc.state.applied_version == 0
    assert agent.infer({"x": [1, 2]}) == {"y": 3}           # serving unaffected
    operator.publish_desired("f1", "d1", desired(1, "dep-ok", 2))   # and control still works
    wait_for(lambda: agent.active["release"] == 2)


def test_response_topic_outside_device_subtree_is_refused(make_device, operator):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    make_device(SimAgent())
    operator.subscribe(T.cmd_response("rebirth"), "elsewhere/#", T.events)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "elsewhere/steal"
    props.CorrelationData = b"c1"
    operator.publish(T.cmd("rebirth"), b"{}", retain=False, properties=props)
    msgs = collect(operator, lambda g: any(m.topic == T.cmd_response("rebirth") for m in g)
                   and any(m.topic == T.events for m in g))
    assert not any(m.topic.startswith("elsewhere") for m in msgs)
    resp = next(m for m in msgs if m.topic == T.cmd_response("rebirth"))
    assert resp.properties.CorrelationData == b"c1"
