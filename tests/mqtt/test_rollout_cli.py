"""`edgeship rollout` as a user runs it, against a real mosquitto and simulated devices: bad
plans refused before anything is published, --dry-run, a controller killed with SIGKILL and
resumed (no device assigned twice, no wave lost), two controllers refused (local lock and
retained claim), pause/resume from another process, status while the controller is dead."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtt_helpers import wait_for
from toolchain.cli import main as edgeship

pytestmark = pytest.mark.mqtt
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_bundles, operator_keys):
    d = tmp_path_factory.mktemp("ro-repo") / "repo"
    for r in (1, 2):
        assert edgeship(["publish", str(tiny_bundles[r].path), "--repo", str(d), "--keys", str(operator_keys.dir), "--init"]) == 0
    return d


@pytest.fixture
def sim(broker, operator_keys):
    from runtime.contracts.mqtt.signing import OperatorKeys
    from toolchain.fleet.client import BrokerSettings
    from toolchain.fleet.sim.behaviour import SimBehaviour
    from toolchain.fleet.sim.fleet import SimFleet

    keys = OperatorKeys.from_root(json.loads(operator_keys.root.read_text()))
    s = SimFleet(n=12, fleet="f1", settings=BrokerSettings(port=broker.port), keys=keys, model="tiny", release=1,
                 behaviour=SimBehaviour(seed=5, metrics_interval_s=0.25, install_s=0.2, requests_per_s=40.0)).start()
    from toolchain.fleet.client import FleetClient

    with FleetClient(BrokerSettings(port=broker.port)) as fc:
        wait_for(lambda: len(fc.snapshot("f1", settle_s=0.3)) >= 12)
    yield s
    s.stop()


def _args(broker, repo, operator_keys, tmp_path, *extra):
    return ["rollout", "start", "--fleet", "f1", "--model", "tiny", "--release", "2", "--group", "sim",
            "--repo", str(repo), "--keys", str(operator_keys.dir), "--journal-dir", str(tmp_path / "j"),
            "--broker", f"127.0.0.1:{broker.port}", *extra]


FAST = ["--bake", "1", "--min-requests", "60", "--min-device-s", "2", "--min-windows", "3", "--install-timeout", "20"]


def test_bad_plans_are_refused_before_anything_is_published(broker, operator, sim, repo, operator_keys, tmp_path,
                                                            capsys):
    operator.subscribe("edgeship/v1/#")
    list(operator.messages(timeout_s=1.0, idle_s=0.5))             # the fleet's retained state
    plan = tmp_path / "plan.toml"
    plan.write_text('fleet = "f1"\nmodel = "tiny"\nrelease = 2\nbake = 3\n[target]\ngroup = "sim"\n')
    cases = [
        (["--waves", "0,rest"], 2, "a wave needs at least 1 device"),
        (["--waves", "150%"], 2, "a percentage must be in (0, 100]"),
        (["--max-failure-pct", "150"], 2, "between 0 and 100"),
        (["--max-p95-ratio", "0.5"], 2, "must be >= 1"),
        (["--on-install-failure", "explode"], 2, "choose one of"),
        (["--waves", "6,6,rest"], 2, "wave 3 (rest) would get no device"),
        (["--release", "9"], 1, "tiny release 9 is not a signed target"),
        (["--group", "nobody"], 2, "the plan targets nobody"),
        (["--select", "arch=riscv"], 2, "the plan targets nobody"),
        (["--select", "colour=red"], 2, "unknown selector key"),
    ]
    for extra, code, needle in cases:
        args = _args(broker, repo, operator_keys, tmp_path, *FAST, *extra)
        if "--group" in extra or "--select" in extra:
            i = args.index("--group")
            del args[i:i + 2]
        rc = edgeship(args)
        err = capsys.readouterr().err
        assert rc == code and needle in err, (extra, rc, err)
    rc = edgeship(["rollout", "start", str(plan), "--repo", str(repo), "--keys", str(operator_keys.dir),
                   "--journal-dir", str(tmp_path / "j"), "--broker", f"127.0.0.1:{broker.port}"])
    assert rc == 2 and "unknown key(s) ['bake']" in capsys.readouterr().err
    args = _args(broker, repo, operator_keys, tmp_path)
    del args[args.index("--keys"):args.index("--keys") + 2]
    assert edgeship(args) == 2 and "pass --keys DIR" in capsys.readouterr().err
    assert [m.topic for m in operator.messages(timeout_s=1.0, idle_s=0.5) if not m.topic.endswith("metrics")
            and not m.topic.endswith("reported")] == []           # nothing was published by any of them
    assert not (tmp_path / "j").exists() or not list((tmp_path / "j").rglob("journal.json"))


def test_dry_run_prints_who_gets_what_and_publishes_nothing(broker, operator, sim, repo, operator_keys, tmp_path,
                                                            capsys):
    operator.subscribe("edgeship/v1/+/+/desired", "edgeship/v1/_rollouts/#")
    list(operator.messages(timeout_s=0.5, idle_s=0.3))
    sim.set_offline("sim-0007")
    rc = edgeship(_args(broker, repo, operator_keys, tmp_path, "--id", "dry", "--waves", "1,25%,rest", "--dry-run"))
    out = capsys.readouterr().out
    assert rc == 0 and "dry run of rollout dry" in out and "nothing is published" in out
    assert out.count("tiny r1 -> tiny r2") == 12 and "wave 1 (1: 1 device(s)" in out and "wave 2 (25%: 3" in out
    assert "sim-0007: tiny r1 -> tiny r2  (offline)" in out
    rc = edgeship(_args(broker, repo, operator_keys, tmp_path, "--id", "dry", "--waves", "1,rest", "--dry-run", "--json"))
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["wave"] for r in doc["assignments"]].count(1) == 1 and len(doc["assignments"]) == 12
    assert list(operator.messages(timeout_s=0.8, idle_s=0.5)) == []


def _spawn(*argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "toolchain.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _fresh(operator, topic):
    operator.subscribe(topic)
    return [m for m in operator.messages(timeout_s=1.0, idle_s=0.3) if m.topic == topic and m.payload]


def test_killed_controller_resumes_without_double_assignment_and_two_are_refused(broker, operator, sim, repo,
                                                                                operator_keys, tmp_path):
    from runtime.contracts.mqtt.topics import rollout_topic

    operator.subscribe("edgeship/v1/f1/+/deploy/k1")
    args = _args(broker, repo, operator_keys, tmp_path, *FAST, "--id", "k1", "--waves", "4,rest", "--bake", "4",
                 "--concurrency", "3")
    ctl = _spawn(*args)
    journal = tmp_path / "j" / "k1" / "journal.json"
    accepted: dict[str, int] = {}

    def count():
        for m in operator.messages(timeout_s=0.2, idle_s=0.2):
            doc = m.json() or {}
            if doc.get("state") == "accepted":
                accepted[m.topic.split("/")[3]] = accepted.get(m.topic.split("/")[3], 0) + 1
        return accepted

    wait_for(lambda: len(count()) >= 4 and journal.exists()
             and json.loads(journal.read_text())["settled_ms"], timeout_s=40)   # wave 1 baking
    ctl.send_signal(signal.SIGKILL)
    ctl.wait(10)
    before = json.loads(journal.read_text())
    assert before["status"] == "running" and len(before["assigned"]) == 4
    r = subprocess.run([sys.executable, "-m", "toolchain.cli", *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "already has a journal" in r.stderr and "rollout resume k1" in r.stderr
    st = _fresh(operator, rollout_topic(fleet="f1", rollout="k1", leaf="state"))
    assert st and st[-1].json()["id"] == "k1"                      # status while no controller runs
    resume = ["rollout", "resume", "k1", "--fleet", "f1", "--keys", str(operator_keys.dir), "--journal-dir",
              str(tmp_path / "j"), "--broker", f"127.0.0.1:{broker.port}"]
    a = _spawn(*resume)
    wait_for(lambda: _fresh(operator, rollout_topic(fleet="f1", rollout="k1", leaf="claim")), timeout_s=20)
    b = subprocess.run([sys.executable, "-m", "toolchain.cli", *resume, "--timeout", "2"],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert "resume sent to the controller of rollout k1" in b.stdout, (b.stdout, b.stderr)  # a live claim: only a message
    other = tmp_path / "j2"
    shutil.copytree(tmp_path / "j", other)                         # as if on another machine: no shared lock
    from toolchain.fleet.rollout.controller import Controller
    from toolchain.fleet.rollout.journal import Journal
    from toolchain.fleet.client import BrokerSettings
    from toolchain.fleet.errors import RolloutClaimedError
    from runtime.contracts.mqtt.signing import OperatorKeys

    j2 = Journal(other, "k1")
    with pytest.raises(RolloutClaimedError, match="already run by controller"):
        Controller(j2.load(), journal=j2, settings=BrokerSettings(port=broker.port), signer=operator_keys.signer,
                   operator_keys=OperatorKeys.from_root(json.loads(operator_keys.root.read_text())),
                   say=lambda s: None).run(settle_s=1.0)
    with pytest.raises(RolloutClaimedError, match="on this machine"):
        j = Journal(tmp_path / "j", "k1")
        Controller(j.load(), journal=j, settings=BrokerSettings(port=broker.port), signer=operator_keys.signer,
                   operator_keys=OperatorKeys.from_root(json.loads(operator_keys.root.read_text())),
                   say=lambda s: None).run()
    out, err = a.communicate(timeout=90)
    assert a.returncode == 0, (out, err)
    assert "status COMPLETED" in out
    count()
    assert sorted(accepted) == sorted(sim.devices) and set(accepted.values()) == {1}   # each device assigned once
    assert all(d.release == 2 for d in sim.devices.values())
    end = json.loads(journal.read_text())
    assert {d: a["version"] for d, a in end["assigned"].items() if d in before["assigned"]} == \
        {d: a["version"] for d, a in before["assigned"].items()}    # the same orders, not new ones


def test_pause_and_resume_from_another_process(broker, operator, sim, repo, operator_keys, tmp_path, capsys):
    args = _args(broker, repo, operator_keys, tmp_path, *FAST, "--id", "p1", "--waves", "2,rest", "--bake", "3",
                 "--concurrency", "2")
    ctl = _spawn(*args)
    from runtime.contracts.mqtt.topics import rollout_topic

    topic = rollout_topic(fleet="f1", rollout="p1", leaf="state")
    wait_for(lambda: (s := _fresh(operator, topic)) and s[-1].json()["waves"][0]["committed"] >= 1, timeout_s=30)
    common = ["p1", "--fleet", "f1", "--keys", str(operator_keys.dir), "--journal-dir", str(tmp_path / "j"),
              "--broker", f"127.0.0.1:{broker.port}"]
    assert edgeship(["rollout", "pause", *common]) == 0
    assert "pause sent to the controller" in capsys.readouterr().out
    wait_for(lambda: _fresh(operator, topic)[-1].json()["status"] == "paused", timeout_s=10)
    assert edgeship(["rollout", "status", "p1", "--fleet", "f1", "--broker", f"127.0.0.1:{broker.port}"]) == 0
    text = capsys.readouterr().out
    assert "status PAUSED" in text and "WAVE" in text and "COMMITTED" in text
    time.sleep(1.0)
    paused_assigned = json.loads((tmp_path / "j" / "p1" / "journal.json").read_text())["assigned"]
    assert len(paused_assigned) <= 4
    assert edgeship(["rollout", "resume", *common]) == 0
    assert "resume sent to the controller" in capsys.readouterr().out
    out, err = ctl.communicate(timeout=90)
    assert ctl.returncode == 0 and "status COMPLETED" in out, (out, err)
    assert edgeship(["rollout", "status", "p1", "--fleet", "f1", "--json", "--broker", f"127.0.0.1:{broker.port}"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "completed" and [w["committed"] for w in doc["waves"]] == [2, 10]


def test_push_to_a_group_warns_about_offline_devices(broker, sim, repo, operator_keys, capsys):
    sim.set_offline("sim-0003")
    time.sleep(0.3)
    rc = edgeship(["push", "--fleet", "f1", "--group", "sim", "--model", "tiny", "--release", "2", "--repo", str(repo),
                   "--keys", str(operator_keys.dir), "--broker", f"127.0.0.1:{broker.port}"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: 1 of the 12 targeted device(s) report themselves offline (sim-0003)" in err


def test_a_rollout_id_that_is_no_topic_level_is_refused_before_connecting(capsys):
    for cmd in (["rollout", "status", "a/b"], ["rollout", "pause", "a/b"]):
        assert edgeship([*cmd, "--fleet", "f1", "--broker", "127.0.0.1:1"]) == 2, cmd
        err = capsys.readouterr().err
        assert "rollout id 'a/b' is not a valid topic level" in err, err
