"""End to end on one machine with the real pieces: broker, TUF repository on disk, Agent,
Updater; `edgeship push --wait` drives an update over MQTT and the device's reported state
is the truth, including a release its gate refuses."""

from __future__ import annotations

import json
import shutil

import pytest

from mqtt_helpers import wait_for
from toolchain.cli import main as edgeship

pytestmark = pytest.mark.mqtt


@pytest.fixture
def real_device(tmp_path, broker, make_device, agent_state, tiny_bundles):
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.ota import UpdateSection, Updater
    from toolchain.demo_ota import make_bad_bundle

    keys, repo = tmp_path / "keys", tmp_path / "repo"
    assert edgeship(["keys", "init", "--dir", str(keys)]) == 0
    bad = make_bad_bundle(tmp_path / "bad", release=3)
    for b in (tiny_bundles[1].path, tiny_bundles[2].path, bad):
        assert edgeship(["publish", str(b), "--repo", str(repo), "--keys", str(keys), "--init"]) == 0
    (agent_state / "trust").mkdir(exist_ok=True)
    shutil.copy(keys / "root.json", agent_state / "trust" / "root.json")
    agent = Agent(AgentConfig.for_state_dir(agent_state))
    ucfg = UpdateSection(repository_url=str(repo), trial_requests=20, trial_duration_s=1.0,
                         trial_probe_interval_s=0.02)
    updater = Updater(agent.config, agent.store, agent, update_config=ucfg)
    svc = make_device(agent, updater, device="real1", operator_root=str(agent_state / "trust" / "root.json"))
    yield {"agent": agent, "svc": svc, "repo": repo}
    agent.close()


def test_push_real_update_commit_then_bad_release_refused(broker, real_device, capsys):
    agent, repo = real_device["agent"], real_device["repo"]
    common = ["--fleet", "f1", "--device", "real1", "--model", "tiny", "--repo", str(repo),
              "--keys", str(real_device["repo"].parent / "keys"),
              "--broker", f"127.0.0.1:{broker.port}", "--wait", "--timeout", "60"]
    assert edgeship(["push", *common, "--release", "2"]) == 0, capsys.readouterr()
    assert agent.status()["active"]["release"] == 2
    rc = edgeship(["push", *common, "--release", "3"])
    err = capsys.readouterr().err
    assert rc == 1 and "real1: failed gate." in err, err
    assert agent.status()["active"]["release"] == 2          # the old model keeps serving
    assert edgeship(["fleet", "status", "--fleet", "f1", "--json", "--broker", f"127.0.0.1:{broker.port}"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["active"]["release"] == 2 and row["last_deployment"]["state"] == "failed"
    assert row["rejected"][-1]["release"] == 3 and row["rejected"][-1]["reason_code"].startswith("gate.")
