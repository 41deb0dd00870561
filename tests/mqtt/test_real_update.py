"""End to end on one machine with the real pieces: broker, TUF repository on disk, Agent,
Updater; `edgeship push --wait` drives an update over MQTT and the device's reported state
is the truth, including a release its gate refuses, and a profile refused while an update
really runs on the device."""

from __future__ import annotations

import json
import shutil

import pytest

from mqtt_helpers import wait_for
from toolchain.cli import main as edgeship

pytestmark = pytest.mark.mqtt


@pytest.fixture
def real_device(request, tmp_path, broker, make_device, agent_state, tiny_bundles):
    """A real Agent + Updater on a TUF repository of releases 1, 2 and a bad 3; ``indirect``
    parametrisation overrides the [update] settings (e.g. a long trial)."""
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
    ucfg = UpdateSection(**{"repository_url": str(repo), "trial_requests": 20, "trial_duration_s": 1.0,
                            "trial_probe_interval_s": 0.02, **getattr(request, "param", {})})
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


@pytest.mark.parametrize("real_device", [{"trial_requests": 10**6, "trial_duration_s": 6.0,
                                          "trial_probe_interval_s": 0.1}], indirect=True)
def test_profile_is_refused_while_an_update_runs_then_accepted(broker, real_device, capsys):
    """`edgeship fleet profile` during a real OTA update (release 2 in its trial window, pushed
    over MQTT): the device refuses naming the update; once it committed, the profile runs."""
    agent, svc, repo = real_device["agent"], real_device["svc"], real_device["repo"]
    keys = ["--keys", str(repo.parent / "keys"), "--broker", f"127.0.0.1:{broker.port}"]
    assert edgeship(["push", "--fleet", "f1", "--device", "real1", "--model", "tiny", "--repo", str(repo),
                     "--release", "2", *keys]) == 0, capsys.readouterr()
    wait_for(lambda: svc.running_deployment() is not None and agent.status()["active"]["release"] == 2, timeout_s=30)
    capsys.readouterr()
    profile = ["fleet", "profile", "--fleet", "f1", "--device", "real1", "--min-iters", "20",
               "--min-duration", "0.2", "--warmup-s", "0.05", "--timeout", "60", *keys]
    rc = edgeship(profile + ["-o", str(repo.parent / "refused")])
    err = capsys.readouterr().err
    assert rc == 1 and "[busy.updating]" in err and "update" in err, err
    assert svc.running_deployment() is not None              # the refusal did not end the update
    assert not (repo.parent / "refused").exists()
    wait_for(lambda: svc.running_deployment() is None, timeout_s=30)
    assert agent.status()["active"]["release"] == 2           # the trial passed: committed
    rc = edgeship(profile + ["-o", str(repo.parent / "accepted")])
    assert rc == 0, capsys.readouterr()
    assert (repo.parent / "accepted" / "result.json").exists()
