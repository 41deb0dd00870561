"""The fleet simulator speaks the agent's protocol through the same contracts code: `edgeship
push` drives simulated devices like real ones (signed desired state, deploy events, the
retained reported state), forged orders are refused by the same verifier, a device that
was offline converges on the retained desired state when it returns."""

from __future__ import annotations

import json

import pytest

from mqtt_helpers import wait_for
from runtime.contracts.mqtt.payloads import Desired
from runtime.contracts.mqtt.signing import Addressee, OperatorKeys
from toolchain.cli import main as edgeship

pytestmark = pytest.mark.mqtt


@pytest.fixture
def sim(broker, operator_keys):
    from toolchain.fleet.client import BrokerSettings
    from toolchain.fleet.sim.behaviour import SimBehaviour
    from toolchain.fleet.sim.fleet import SimFleet

    keys = OperatorKeys.from_root(json.loads(operator_keys.root.read_text()))
    b = SimBehaviour(seed=3, metrics_interval_s=0.5, install_s=0.2, groups={"lab": 1.0})
    fleet = SimFleet(n=12, fleet="f1", settings=BrokerSettings(port=broker.port), keys=keys, model="tiny",
                     release=1, behaviour=b.with_release(2, gate_fail_share=0.3), devices_per_connection=5).start()
    yield fleet
    fleet.stop()


def test_push_to_simulated_devices_with_gate_failures(broker, sim, operator_keys, tiny_bundles, tmp_path, capsys):
    repo = tmp_path / "repo"
    for r in (1, 2):
        assert edgeship(["publish", str(tiny_bundles[r].path), "--repo", str(repo), "--keys", str(operator_keys.dir), "--init"]) == 0
    rc = edgeship(["push", "--fleet", "f1", "--group", "lab", "--model", "tiny", "--release", "2", "--repo", str(repo),
                   "--keys", str(operator_keys.dir), "--wait", "--timeout", "30", "--broker", f"127.0.0.1:{broker.port}"])
    err = capsys.readouterr().err
    failing = sorted(d for d in sim.devices if sim.behaviour.gate_fails(d, 2))
    assert 0 < len(failing) < 12 and rc == 1
    assert all(f"{d}: failed gate.tolerance" in err for d in failing), err
    assert {d for d, dev in sim.devices.items() if dev.release == 2} == set(sim.devices) - set(failing)
    assert edgeship(["fleet", "status", "--fleet", "f1", "--json", "--broker", f"127.0.0.1:{broker.port}"]) == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 12 and all(r["online"] for r in rows.values())
    assert rows[failing[0]]["rejected"][-1]["reason_code"] == "gate.tolerance"
    assert rows[failing[0]]["active"]["release"] == 1


def test_simulated_devices_refuse_forgeries_and_converge_after_an_outage(sim, operator):
    from toolchain.fleet.signer import OperatorSigner
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = "sim-0003"
    forged = OperatorSigner(Ed25519PrivateKey.generate()).desired(Desired(5, "dep-x", "tiny", 2),
                                                                  to=Addressee("f1", device=d))
    operator.publish(f"edgeship/v1/f1/{d}/desired", forged, retain=True)
    wait_for(lambda: sim.stats.refused == 1)
    assert sim.devices[d].release == 1
    sim.set_offline(d)
    operator.publish_desired("f1", d, Desired(6, "dep-y", "tiny", 3))   # while it is away
    assert sim.devices[d].release == 1
    sim.set_online(d)                                                  # the retained desired state reaches it
    wait_for(lambda: sim.devices[d].release == 3)
    view = wait_for(lambda: (v := operator.snapshot("f1", settle_s=0.3)[d]).reported["active"]["release"] == 3 and v)
    assert view.reported["last_deployment"]["deployment_id"] == "dep-y" and view.status["online"]


def test_fleet_simulate_command(broker, operator_keys, capsys):
    rc = edgeship(["fleet", "simulate", "--devices", "20", "--fleet", "f9", "--model", "tiny", "--keys",
                   str(operator_keys.dir), "--duration", "1.5", "--metrics-interval", "0.5", "--offline", "0.2",
                   "--groups", "sim=1,canary=0.3", "--arch", "x86_64=0.5,aarch64=0.5", "--gate-fail", "2=0.5",
                   "--drift", "1=0.5", "--json", "--broker", f"127.0.0.1:{broker.port}"])
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert rc == 0 and doc["devices"] == 20 and doc["by_release"] == {"1": 20} and doc["connections"] == 1
    assert doc["published_by_kind"]["metrics"] > 0 and "20 simulated devices of fleet f9" in out.err
    assert doc["published_by_kind"]["drift"] == doc["published_by_kind"]["metrics"]  # a drift check a window
    assert edgeship(["fleet", "status", "--fleet", "f9", "--json", "--broker", f"127.0.0.1:{broker.port}"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20 and not any(r["online"] for r in rows)   # a clean stop says offline
    assert any("canary" in r["groups"] for r in rows) and all(r["active"]["name"] == "tiny" for r in rows)
    assert edgeship(["fleet", "drift", "--fleet", "f9", "--json", "--broker", f"127.0.0.1:{broker.port}"]) == 0
    drift = json.loads(capsys.readouterr().out)                      # the operator's tool reads the sim's documents
    assert drift["devices"] and not drift["malformed"] and drift["releases"][0]["worst_psi"] > 0.25   # online ones
    base = ["fleet", "simulate", "--fleet", "f9", "--model", "tiny", "--keys", str(operator_keys.dir),
            "--duration", "0.1", "--broker", f"127.0.0.1:{broker.port}"]
    for bad, needle in ((["--devices", "0"], "--devices must be >= 1"),
                        (["--devices", "3", "--gate-fail", "2=1.5"], "between 0 and 1"),
                        (["--devices", "3", "--drift", "2=-0.1"], "drift_share = -0.1: a share"),
                        (["--devices", "3", "--latency", "x"], "KEY=NUMBER")):
        assert edgeship(base + bad) == 2 and needle in capsys.readouterr().err, bad
