"""The sample ACL of docs/mosquitto/acl, used verbatim by a real mosquitto with password
authentication: a device works in its own subtree and cannot touch another device's."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from mqtt_helpers import wait_for
from runtime.contracts.mqtt.payloads import Desired
from mqtt_sim import SimAgent, SimUpdater
from toolchain.fleet.localbroker import MOSQUITTO, Broker

pytestmark = pytest.mark.mqtt

ACL = Path(__file__).resolve().parents[2] / "docs" / "mosquitto" / "acl"
USERS = {"f1/d1": "pw-d1", "f1/d2": "pw-d2", "edgeship-operator": "pw-op"}


@pytest.fixture
def acl_broker(tmp_path):
    passwd_bin = shutil.which("mosquitto_passwd")
    if MOSQUITTO is None or passwd_bin is None:
        pytest.skip("mosquitto / mosquitto_passwd not installed (Debian package 'mosquitto')")
    pw = tmp_path / "passwd"
    for i, (user, secret) in enumerate(USERS.items()):
        subprocess.run([passwd_bin, *(["-c"] if i == 0 else []), "-b", str(pw), user, secret], check=True)
    b = Broker(str(tmp_path / "b"), auth_conf=f"allow_anonymous false\npassword_file {pw}\nacl_file {ACL}\n").start()
    yield b
    b.stop()


def _raw_client(port, user, secret):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"raw-{user.replace('/', '-')}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(user, secret)
    acks: dict[int, int] = {}
    got: list = []
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    c.on_publish = lambda cl, u, mid, rc, p: acks.__setitem__(mid, rc.value)
    c.on_message = lambda cl, u, m: got.append(m.topic)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(5)
    return c, acks, got


def test_sample_acl_confines_devices(acl_broker, tmp_path, operator_keys):
    from device_agent.mqtt import MqttConfig, start
    from toolchain.fleet.client import BrokerSettings, FleetClient

    (tmp_path / "d1.pw").write_text(USERS["f1/d1"])
    agent = SimAgent()
    (tmp_path / "d1.pw").chmod(0o600)
    svc = start(MqttConfig(fleet="f1", device_id="d1", port=acl_broker.port, username="f1/d1",
                           password_file=str(tmp_path / "d1.pw"), queue_dir=str(tmp_path / "q"),
                           operator_root=str(operator_keys.root)),
                agent, SimUpdater(agent))
    try:
        assert svc.link.wait_connected(10)
        with FleetClient(BrokerSettings(port=acl_broker.port, username="edgeship-operator",
                                        password=USERS["edgeship-operator"]), signer=operator_keys.signer) as op:
            view = wait_for(lambda: (v := op.snapshot("f1", settle_s=0.3).get("d1")) and v.reported and v)
            assert view.status["online"] is True
            op.publish_desired("f1", "d1", Desired(1, "dep-acl", "demo", 2))
            wait_for(lambda: agent.active["release"] == 2)
            assert op.command("f1", "d1", "rebirth")["ok"] is True      # response allowed by cmd/+/resp/#
            # another device: may not write d1's topics nor desired state, nor read d1
            rogue, acks, got = _raw_client(acl_broker.port, "f1/d2", USERS["f1/d2"])
            rogue.subscribe("edgeship/v1/f1/d1/#", qos=1)
            infos = [rogue.publish("edgeship/v1/f1/d1/status", json.dumps({"online": False}), qos=1, retain=True),
                     rogue.publish("edgeship/v1/f1/d2/desired", b"{}", qos=1, retain=True),
                     rogue.publish("edgeship/v1/f1/d2/status", b'{"online": true}', qos=1)]
            for info in infos:
                info.wait_for_publish(5)
            assert [acks[i.mid] for i in infos] == [0x87, 0x87, 0]     # not authorized / ok
            op.publish_desired("f1", "d1", Desired(2, "dep-acl2", "demo", 3))
            wait_for(lambda: agent.active["release"] == 3)
            assert got == []                                           # saw nothing of d1
            view = op.snapshot("f1", settle_s=0.3)["d1"]
            assert view.status["online"] is True                       # the forged offline status never landed
            rogue.disconnect()
            rogue.loop_stop()
    finally:
        svc.stop(timeout_s=1)
