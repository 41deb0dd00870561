"""The operator key rotates like the TUF keys: `keys rotate --role operator` writes a new root
(signed by the root keys) to the repository; a device learns it at its next TUF refresh, or at
once when a message signed by the new key arrives (one refresh, rate limited); the old key
is refused from then on. Real repository, real ngclient, real mosquitto."""

from __future__ import annotations

import json

import pytest


pytestmark = pytest.mark.mqtt


def test_rotated_operator_key_is_learned_through_tuf_and_the_old_one_refused(env, broker, tmp_path):
    from device_agent.mqtt import MqttConfig, start
    from runtime.contracts.mqtt.signing import OPERATOR_FIELD
    from toolchain.fleet.client import BrokerSettings, FleetClient
    from toolchain.fleet.signer import OperatorSigner
    from toolchain.ota.publish import rotate_key

    store, agent, up = env.device()
    old = OperatorSigner.from_keys_dir(env.keys)
    cfg = MqttConfig(fleet="f1", device_id="d1", port=broker.port, reconnect_min_s=1, reconnect_max_s=2)
    svc = start({"mqtt": cfg, "state_dir": env.state}, agent, up)   # trust: the state dir's TUF roots
    try:
        assert svc.link.wait_connected(10)
        with FleetClient(BrokerSettings(port=broker.port), signer=old) as op:
            assert op.command("f1", "d1", "rebirth")["ok"] is True
            old_id, new_id = rotate_key(role="operator", repo_dir=env.repo, keys_dir=env.keys)
            assert old_id == old.keyid and (env.keys / "retired" / "operator" / f"{old_id}.pem").exists()
            root2 = json.loads((env.repo / "metadata" / "2.root.json").read_text())
            assert list(root2["signed"][OPERATOR_FIELD]["keys"]) == [new_id]
            new = OperatorSigner.from_keys_dir(env.keys)
            assert new.keyid == new_id
            op.signer = new
            r = op.command("f1", "d1", "rebirth")                 # unknown key -> one TUF refresh -> trusted
            assert r["ok"] is True, r
            assert json.loads((env.state / "update" / "metadata" / "root.json").read_text())["signed"]["version"] == 2
            op.signer = old
            r = op.command("f1", "d1", "rebirth")                 # rotated out
            assert r["ok"] is False and r["reason_code"] == "control.unknown_key"
    finally:
        svc.stop(timeout_s=1)
        agent.close()
