"""The monitoring stack with real parts: mosquitto, a real `edgeship-agent run` with [mqtt] and
[drift], a real `edgeship fleet exporter` process (plus synthetic devices publishing real
payloads), and a real Prometheus scraping the agent and the exporter. Drift alarms travel
end to end; promtool passes on both endpoints; every Grafana panel's PromQL returns series."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest

from monhelpers import AgentProcess, Prometheus, env, free_port, need_prometheus
from promserver import promtool_check

from toolchain.fleet.localbroker import MOSQUITTO, Broker

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "docs" / "grafana" / "dashboards"
FLEET, DEVICE = "it", "agent-1"

pytestmark = pytest.mark.mqtt
#: the document `edgeship rollout` publishes retained (toolchain.fleet.rollout.status.summary)
ROLLOUT_STATE = {"schema": "edgeship.rollout/1", "id": "r-1", "fleet": FLEET, "model": "tiny", "release": 2,
                 "status": "running", "reason": None, "wave": 2,
                 "waves": [{"wave": 1, "size": 1, "spec": "1", "assigned": 1, "committed": 1, "failed": 0,
                            "pending": 0, "state": "passed"},
                           {"wave": 2, "size": 3, "spec": "50%", "assigned": 3, "committed": 2, "failed": 0,
                            "pending": 1, "state": "installing"}],
                 "criteria": {}, "failures": [], "failed_total": 0, "breaches": [], "rollback": None,
                 "cleared": 0, "concurrency": 10, "updated_ms": 0}


def _drift_bundle(work: Path) -> Path:
    from toolchain.demo_ota import make_tiny_build
    from toolchain.package import package_build

    build = make_tiny_build(work / "build", samples=300)
    res = package_build(build, artifact_id="onnxruntime-fp32", version="1.2.0", release=2, out_dir=work / "bundles",
                        golden_samples=2)
    assert res.info.drift is not None and set(res.info.drift.tensors) == {"x", "y"}
    return res.path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_prometheus()
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found")
    from toolchain.fleet.synthetic import SyntheticFleet

    work = tmp_path_factory.mktemp("stack")
    thermal = work / "thermal" / "thermal_zone0"
    thermal.mkdir(parents=True)
    (thermal / "temp").write_text("48500\n")
    broker = Broker(str(work / "broker")).start()
    extra = (f'\n[mqtt]\nfleet = "{FLEET}"\ndevice_id = "{DEVICE}"\nport = {broker.port}\nmetrics_interval_s = 1.0\n'
             "heartbeat_s = 5.0\n"
             "\n[drift]\ncheck_every_requests = 20\ncheck_interval_s = 0.5\nwindow_checks = 3\nmin_samples = 40\n"
             "sustain_checks = 2\n"
             # capture on, so the device dashboard's capture panel has series: a tenth of the calls
             '\n[capture]\nenabled = true\nwrite_interval_s = 0.1\ndisk_budget_bytes = 4194304\n'
             '[[capture.rules]]\nname = "sample"\nrate = 0.1\nmax_count = 200\n')
    agent = AgentProcess(work / "agent", _drift_bundle(work), extra_toml=extra)
    import os

    os.environ["EDGESHIP_THERMAL_ROOT"] = str(work / "thermal")  # inherited by the agent process
    try:
        agent.start()
    finally:
        del os.environ["EDGESHIP_THERMAL_ROOT"]
    exp_port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "fleet", "exporter", "--broker",
                                 f"127.0.0.1:{broker.port}", "--port", str(exp_port), "--fleet", FLEET],
                                env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "fleet exporter: http://" in exporter.stdout.readline()
    sim = SyntheticFleet(broker.port, fleet=FLEET, n=6, model="tiny", release=2, new_share=0.5)
    stop = threading.Event()

    def devices():  # synthetic cohort devices next to the real agent: metrics every second
        sim.birth()
        sim.drift_round()
        # a rollout controller's retained state (edgeship rollout; toolchain/fleet/rollout/status.py)
        sim.client.publish(f"edgeship/v1/_rollouts/{FLEET}/r-1/state", json.dumps(ROLLOUT_STATE).encode(), qos=1,
                           retain=True)
        while not stop.is_set():
            sim.metrics_round(window_s=1.0, error_rate=0.02)
            stop.wait(1.0)

    feeder = threading.Thread(target=devices, daemon=True)
    feeder.start()
    prom = Prometheus(work / "prom", {"agent": f"127.0.0.1:{agent.port}", "exporter": f"127.0.0.1:{exp_port}"}).start()
    yield {"agent": agent, "broker": broker, "exporter_port": exp_port, "prom": prom}
    stop.set()
    feeder.join(5)
    sim.close()
    prom.stop()
    exporter.terminate()
    exporter.wait(10)
    agent.stop()
    broker.stop()


def _infer(client: httpx.Client, url: str, x: np.ndarray) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.astype(float).tolist()}]}
    r = client.post(url + "/v2/models/tiny/infer", json=body)
    assert r.status_code == 200, r.text


def test_a_drift_alarm_travels_from_the_agent_to_mqtt_metrics_and_fleet_drift(stack):
    from toolchain.fleet.client import BrokerSettings, FleetClient

    a = stack["agent"]
    rng = np.random.default_rng(0)
    with FleetClient(BrokerSettings(port=stack["broker"].port)) as fc:
        fc.subscribe(f"edgeship/v1/{FLEET}/{DEVICE}/events")
        with httpx.Client() as client:
            for _ in range(100):  # traffic like the validation data: no alarm
                _infer(client, a.url, rng.standard_normal(4))
            time.sleep(1.5)
            metrics = client.get(a.url + "/metrics").text
            assert re.search(r'edgeship_drift_alarm\{kind="input",reason="drift.psi",tensor="x"\} 0\.0', metrics)
            for _ in range(150):  # shifted far outside the validation range
                _infer(client, a.url, rng.standard_normal(4) + 6.0)
        events = []
        for msg in fc.messages(timeout_s=20):
            doc = msg.json()
            if doc and doc.get("category") == "drift":
                events.append(doc)
                if {e["reason_code"] for e in events} >= {"drift.psi", "drift.out_of_range"}:
                    break
    codes = {e["reason_code"] for e in events}
    assert {"drift.psi", "drift.out_of_range"} <= codes, events
    ev = next(e for e in events if e["reason_code"] == "drift.out_of_range")
    assert ev["severity"] == "alarm" and ev["context"]["tensor"] in ("x", "y") and ev["context"]["model"]["name"] == "tiny"
    metrics = httpx.get(a.url + "/metrics").text
    assert re.search(r'edgeship_drift_alarm\{kind="input",reason="drift.out_of_range",tensor="x"\} 1\.0', metrics)
    assert float(re.search(r'edgeship_drift_score\{kind="input",score="psi",tensor="x"\} (\S+)', metrics)[1]) > 0.25
    out = subprocess.run([sys.executable, "-m", "toolchain.cli", "fleet", "drift", "--fleet", FLEET, "--json",
                          "--broker", f"127.0.0.1:{stack['broker'].port}"], env=env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    me = next(r for r in doc["devices"] if r["device"] == DEVICE)
    assert me["model"] == "tiny" and me["worst_psi"] > 0.25 and "drift.out_of_range:input:x" in me["alarms"]
    assert any(r["release"] == 2 and r["alarmed"] >= 1 for r in doc["releases"])
    table = subprocess.run([sys.executable, "-m", "toolchain.cli", "fleet", "drift", "--fleet", FLEET, "--broker",
                            f"127.0.0.1:{stack['broker'].port}"], env=env(), capture_output=True, text=True, timeout=60)
    assert DEVICE in table.stdout and "worst psi" in table.stdout and "devices alarmed" in table.stdout
    # the device's own status: one drift line (checks, window, the active alarms, the worst PSI, the schedule)
    st = subprocess.run([sys.executable, "-m", "device_agent.cli", "status", "--config", str(a.config)], env=env(),
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0, st.stderr
    line = next(ln for ln in st.stdout.splitlines() if ln.startswith("drift "))
    assert "alarm(s): " in line and "drift.out_of_range:input:x" in line and "worst PSI" in line, line
    assert "every request sketched, a check every 20 requests" in line, line
    js = json.loads(subprocess.run([sys.executable, "-m", "device_agent.cli", "status", "--json", "--config",
                                    str(a.config)], env=env(), capture_output=True, text=True, timeout=60).stdout)
    assert js["drift"]["schedule"]["check_every_requests"] == 20 and js["drift"]["worst"]["psi"] > 0.25


def test_promtool_passes_on_both_endpoints_and_prometheus_scrapes_them(stack):
    for url in (stack["agent"].url, f"http://127.0.0.1:{stack['exporter_port']}"):
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            code, out = promtool_check(r.read())
        assert code == 0, (url, out)
    prom = stack["prom"]
    prom.wait_for('edgeship_fleet_device_online{device="agent-1"}')
    prom.wait_for('up{job="agent"} == 1')
    assert prom.wait_for('edgeship_fleet_rollout_wave{rollout="r-1"}')[0]["value"][1] == "2"
    assert prom.query('edgeship_fleet_rollout_wave_devices{rollout="r-1",wave="2",state="committed"}')[0]["value"][1] == "2"
    assert prom.targets_up() == {"agent": "up", "exporter": "up"}
    got = prom.wait_for('edgeship_fleet_release_devices{fleet="it",model="tiny",release="2"}',
                        pred=lambda r: r and float(r[0]["value"][1]) == 4)  # 3 synthetic + the real agent
    assert got
    assert float(prom.query('edgeship_soc_temperature_celsius{job="agent"}')[0]["value"][1]) == 48.5
    assert float(prom.query('edgeship_telemetry_connected{job="agent"}')[0]["value"][1]) == 1


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def _substitute(expr: str, agent_instance: str) -> str:
    values = {"$fleet": FLEET, "$instance": agent_instance, "$model": "tiny", "$new": "2", "$control": "1",
              "$__rate_interval": "30s", "$__range": "5m"}
    for k in sorted(values, key=len, reverse=True):
        expr = expr.replace(k, values[k])
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_panel_query_parses_and_returns_series(stack):
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert [d.stem for d in dashboards] == ["device", "drift", "fleet-overview", "rollout"]
    prom = stack["prom"]
    instance = f"127.0.0.1:{stack['agent'].port}"
    stop = threading.Event()

    def traffic():  # live requests while the panels are queried, so rates are not zero
        rng = np.random.default_rng(1)
        with httpx.Client() as client:
            while not stop.is_set():
                _infer(client, stack["agent"].url, rng.standard_normal(4))
                time.sleep(0.02)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        prom.wait_for(f'rate(edgeship_requests_total{{instance="{instance}",outcome="ok"}}[30s]) > 0', timeout_s=30)
        prom.wait_for('edgeship_fleet_release_drift_psi_max{release="1"}', timeout_s=30)
        # a rate needs two scrapes of the exporter inside the panels' 30 s window (a loaded
        # machine may have made only one so far)
        for counter in ("messages", "malformed"):
            prom.wait_for(f"rate(edgeship_fleet_exporter_{counter}_total[30s])", timeout_s=45)
        prom.wait_for(f'rate(edgeship_capture_stored_total{{instance="{instance}"}}[30s]) > 0', timeout_s=30)
        _check_panels(prom, dashboards, instance)
    finally:
        stop.set()
        t.join(5)


def _check_panels(prom, dashboards, instance: str) -> None:
    empty = []
    for path in dashboards:
        d = json.loads(path.read_text())
        assert d["uid"].startswith("edgeship-") and d["panels"]
        for var in d["templating"]["list"]:  # the variables' own queries
            q = re.match(r"label_values\((.*),\s*(\w+)\)$", var["query"]["query"])
            assert q, var
            series = prom.api("series", **{"match[]": _substitute(q[1], instance)})
            assert series["status"] == "success" and series["data"], (path.name, var["name"])
        for title, expr in _queries(d):
            result = prom.query(_substitute(expr, instance))  # raises with Prometheus' parse error
            if not result:
                empty.append(f"{path.name}: {title}: {expr}")
    assert not empty, "panels whose query returned no series:\n" + "\n".join(empty)


def test_the_provisioning_points_the_dashboards_at_one_prometheus_data_source():
    import yaml

    prov = ROOT / "docs" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "edgeship.yaml").read_text())["datasources"]
    assert [d["type"] for d in ds] == ["prometheus"]
    uid = ds[0]["uid"]
    dash = yaml.safe_load((prov / "dashboards" / "edgeship.yaml").read_text())["providers"][0]
    assert dash["type"] == "file" and dash["options"]["path"]
    for path in DASHBOARDS.glob("*.json"):
        d = json.loads(path.read_text())
        uids = {p["datasource"]["uid"] for p in d["panels"]} | {t["datasource"]["uid"] for p in d["panels"]
                                                                for t in p["targets"]}
        assert uids == {uid}, path.name
