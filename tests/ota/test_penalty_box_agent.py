"""The retry storm of the issue, in a real `edgeship-agent run` with polling and MQTT: a
release whose gate fails is tried once, then skipped (said once) at every later poll;
every attempt and the skip are on MQTT; a signed `retry` takes it out of the penalty box;
a new release is picked up."""

from __future__ import annotations

import json
import time

import pytest

from toolchain.fleet.localbroker import MOSQUITTO, Broker

from .test_in_agent import _config, _port, _start_agent, _stop

pytestmark = pytest.mark.mqtt


def test_rejected_update_is_not_retried_by_polling(env, tmp_path):
    from toolchain.fleet.client import BrokerSettings, FleetClient
    from toolchain.fleet.signer import OperatorSigner

    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed")
    broker = Broker(str(tmp_path / "broker")).start()
    port = _port()
    cfg = _config(env, port, poll_interval_s=0.25)
    with open(cfg, "a") as f:
        f.write(f'\n[mqtt]\nfleet = "f1"\ndevice_id = "d1"\nport = {broker.port}\nheartbeat_s = 1.0\n')
    agent = None
    try:
        with FleetClient(BrokerSettings(port=broker.port), signer=OperatorSigner.from_keys_dir(env.keys)) as op:
            op.subscribe("edgeship/v1/f1/d1/deploy/+", "edgeship/v1/f1/d1/events")
            agent = _start_agent(cfg, port)
            bad = env.publish(env.bundle(release=2, kind="nan"))
            t0 = time.monotonic()
            got = [(m.topic.rsplit("/", 1)[-1], m.json()) for m in op.messages(timeout_s=6.0)]
            assert time.monotonic() - t0 >= 5.9                      # ~20 polls at 0.25 s
            deploys = {d["deployment_id"] for leaf, d in got if leaf != "events"}
            assert len(deploys) == 1 and next(iter(deploys)).startswith("poll-"), deploys   # one attempt, not 6
            states = [d["state"] for leaf, d in got if leaf != "events"]
            assert states[0] == "fetch" and states[-1] == "failed", states
            events = [d["reason_code"] for leaf, d in got if leaf == "events"]
            assert events == ["gate.nan", "penalty.skipped"], events  # the failure, then one skip notice
            view = op.snapshot("f1")["d1"]
            [boxed] = view.reported["penalty_box"]
            assert (boxed["release"], boxed["sha256"], boxed["reason"]) == (2, bad.sha256, "gate.nan")
            assert boxed["skips"] >= 5                               # still skipped, quietly counted
            assert view.reported["rejected"][-1]["release"] == 2
            log = (env.tmp / "agent.log").read_text()
            assert log.count('"update.skipped_penalty_box"') == 1 and log.count('"update.error"') == 1
            # the operator's signed retry takes it out of the box; the next poll tries it (once) again
            r = op.command("f1", "d1", "retry", {"release": 2, "model": "m"})
            assert r["ok"] is True and r["result"]["forgiven"] == [bad.sha256], r
            again = [m.json() for m in op.messages(timeout_s=4.0)
                     if m.topic.rsplit("/", 2)[-2] == "deploy"]
            assert len({d["deployment_id"] for d in again}) == 1 and again[-1]["state"] == "failed"
            good = env.publish(env.bundle(release=3, kind="good2"))  # a new release: not boxed
            done = next(d for m in op.messages(timeout_s=30.0) if (d := m.json()) and d.get("state") == "commit")
            assert done["release"] == 3
            assert json.loads((env.state / "pointers.json").read_text())["active"]["sha256"] == good.sha256
    finally:
        if agent is not None:
            _stop(agent)
        broker.stop()
