"""`edgeship push` / `fleet status` against a real TUF repository (edgeship keys init +
edgeship publish) and a real broker; devices are telemetry services over simulated agents."""

from __future__ import annotations

import json

import pytest

from mqtt_helpers import wait_for
from mqtt_sim import SimAgent, SimUpdater
from toolchain.cli import main as edgeship

pytestmark = pytest.mark.mqtt


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_bundles, operator_keys):
    d = tmp_path_factory.mktemp("tuf")
    for r in (1, 2):
        assert edgeship(["publish", str(tiny_bundles[r].path), "--repo", str(d / "repo"),
                         "--keys", str(operator_keys.dir), "--init"]) == 0
    return d / "repo"


@pytest.fixture(autouse=True)
def _keys_env(monkeypatch, operator_keys):
    monkeypatch.setenv("EDGESHIP_KEYS", str(operator_keys.dir))   # push signs with the test operator key


def _broker(b):
    return ["--broker", f"127.0.0.1:{b.port}"]


def test_push_of_unpublished_release_is_refused_before_publishing(broker, operator, repo, capsys):
    operator.subscribe("edgeship/v1/#")
    rc = edgeship(["push", "--fleet", "f1", "--device", "d1", "--model", "tiny", "--release", "7",
                   "--repo", str(repo), *_broker(broker)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "tiny release 7 is not a signed target" in err and "[1, 2]" in err and "Nothing was pushed" in err
    rc = edgeship(["push", "--fleet", "f1", "--device", "d1", "--model", "nosuch", "--release", "1",
                   "--repo", str(repo), *_broker(broker)])
    assert rc == 1
    assert list(operator.messages(timeout_s=1.0)) == []       # nothing reached the broker


def test_push_to_repository_with_tampered_metadata_is_refused(broker, repo, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad-repo"
    shutil.copytree(repo, bad)
    targets = sorted((bad / "metadata").glob("*.targets.json"))[-1]
    doc = json.loads(targets.read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"          # signature no longer matches
    targets.write_text(json.dumps(doc))
    rc = edgeship(["push", "--fleet", "f1", "--device", "d1", "--model", "tiny", "--release", "1",
                   "--repo", str(bad), *_broker(broker)])
    assert rc == 1 and "does not verify" in capsys.readouterr().err


def test_push_group_wait_commits_and_fleet_status(broker, make_device, repo, capsys):
    agents = {d: SimAgent(name="tiny") for d in ("a1", "a2", "b1")}
    make_device(agents["a1"], SimUpdater(agents["a1"]), device="a1", groups=("lab",))
    make_device(agents["a2"], SimUpdater(agents["a2"]), device="a2", groups=("lab", "x"))
    make_device(agents["b1"], SimUpdater(agents["b1"]), device="b1", groups=("field",))
    rc = edgeship(["push", "--fleet", "f1", "--group", "lab", "--model", "tiny", "--release", "2",
                   "--repo", str(repo), "--wait", "--timeout", "30", *_broker(broker)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "committed on 2 device(s)" in out
    assert agents["a1"].active["release"] == 2 and agents["a2"].active["release"] == 2
    assert agents["b1"].active["release"] == 1
    rc = edgeship(["fleet", "status", "--fleet", "f1", "--json", *_broker(broker)])
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"a1", "a2", "b1"} and all(r["online"] for r in rows.values())
    assert rows["a1"]["active"]["release"] == 2 and rows["a1"]["last_deployment"]["state"] == "commit"
    assert rows["b1"]["last_deployment"] is None
    assert edgeship(["fleet", "status", "--fleet", "f1", *_broker(broker)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["DEVICE", "ONLINE", "ACTIVE"] and "tiny r2" in table
    # a second push to the same group gets a higher desired version
    rc = edgeship(["push", "--fleet", "f1", "--device", "a1", "--model", "tiny", "--release", "1",
                   "--repo", str(repo), "--wait", "--timeout", "30", *_broker(broker)])
    assert rc == 0 and agents["a1"].active["release"] == 1


def test_push_wait_reports_failure_reasons(broker, make_device, repo, capsys):
    agent = SimAgent(name="tiny")
    make_device(agent, SimUpdater(agent, fail={2: ("gate", "gate.tolerance")}), device="g1")
    rc = edgeship(["push", "--fleet", "f1", "--device", "g1", "--model", "tiny", "--release", "2",
                   "--repo", str(repo), "--wait", "--timeout", "30", *_broker(broker)])
    err = capsys.readouterr().err
    assert rc == 1 and "g1: failed gate.tolerance" in err
    assert edgeship(["push", "--fleet", "f1", "--group", "nobody", "--model", "tiny", "--release", "2",
                     "--repo", str(repo), *_broker(broker)]) == 1
    assert "no device of the fleet reports group 'nobody'" in capsys.readouterr().err
