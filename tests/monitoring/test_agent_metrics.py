"""GET /metrics of the agent: prometheus_client exposition, the one request window's numbers,
bounded labels, no token needed, can be turned off; scraped by a real Prometheus."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from promserver import promtool_check

from device_agent.agent import Agent
from device_agent.config import AgentConfig
from device_agent.monitoring.collector import make_registry
from device_agent.serving.http import create_app
from device_agent.store import Store

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.fixture
def served(tmp_path, tiny_bundle):
    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(tiny_bundle).sha256)
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    registry, collector = make_registry(agent)
    yield TestClient(create_app(agent, control_token="tok", metrics_registry=registry)), agent
    collector.close()
    agent.close()


def test_metrics_agree_with_the_request_window_and_pass_promtool(served):
    c, agent = served
    for _ in range(25):
        assert c.post("/v2/models/tiny/infer", json=BODY).status_code == 200
    with pytest.raises(Exception):  # a wrong shape reaches the engine: counted as rejected
        agent.infer({"x": np.zeros((1, 5), np.float32)})
    r = c.get("/metrics")  # no token header
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    code, out = promtool_check(r.content)
    assert code == 0, out
    text = r.text
    req = _samples(text, "edgeship_requests_total")
    assert req['edgeship_requests_total{model="tiny",outcome="ok",version="1.1.0"}'] == 25
    assert req['edgeship_requests_total{model="tiny",outcome="rejected",version="1.1.0"}'] == 1
    snap = agent.metrics.snapshot()
    assert snap.ok == 25 and snap.rejected == 1  # the same window status/MQTT/trial read
    count = _samples(text, "edgeship_inference_duration_seconds_count")
    assert list(count.values()) == [25.0]
    buckets = _samples(text, "edgeship_inference_duration_seconds_bucket")
    values = list(buckets.values())
    assert values == sorted(values) and values[-1] == 25.0 and len(values) == 17  # 16 edge buckets + Inf
    assert 'le="0.0001"' in next(iter(buckets)) and 'le="10.0"' in list(buckets)[-2]
    assert _samples(text, "edgeship_model_events_total")['edgeship_model_events_total{event="load"}'] == 1
    assert "edgeship_active_model_info{" in text and 'name="tiny"' in text and "edgeship_model_ready 1.0" in text
    assert 'edgeship_update_state{edgeship_update_state="idle"} 1.0' in text
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    for line in text.splitlines():  # bounded labels: no request id, no free-form error text
        assert "id=" not in line.replace("sha256=", "") and "error=" not in line


def test_status_telemetry_metrics_and_oip_statistics_report_the_same_traffic(served):
    import time

    from device_agent.agent.metrics import RequestWindow

    c, agent = served
    telemetry = RequestWindow()
    agent.add_request_observer(telemetry.observe)                  # as the MQTT telemetry window is fed
    t0 = int(time.time() * 1000)
    for _ in range(9):
        assert c.post("/v2/models/tiny/infer", json=BODY).status_code == 200
    t1 = int(time.time() * 1000)
    with pytest.raises(Exception):                                 # rejected: in status and /metrics only
        agent.infer({"x": np.zeros((1, 5), np.float32)})
    text = c.get("/metrics").text
    (st,) = c.get("/v2/models/tiny/stats").json()["model_stats"]
    snap, tel = agent.metrics_snapshot(), telemetry.roll()
    req = _samples(text, "edgeship_requests_total")
    ok = req['edgeship_requests_total{model="tiny",outcome="ok",version="1.1.0"}']
    assert ok == snap["ok"] == tel.ok == st["inference_count"] == st["inference_stats"]["success"]["count"] == 9
    assert snap["errors"] == tel.errors == st["inference_stats"]["fail"]["count"] == 0
    assert req['edgeship_requests_total{model="tiny",outcome="rejected",version="1.1.0"}'] == snap["rejected"] == 1
    (hist_sum,) = _samples(text, "edgeship_inference_duration_seconds_sum").values()
    ns = st["inference_stats"]["success"]["ns"]
    assert ns > 0 and abs(hist_sum * 1e9 - ns) < 9 + 1e-6 * ns   # one latency sum, truncated per request
    assert t0 <= st["last_inference"] <= t1


def test_metrics_can_be_turned_off_and_the_window_stays_bounded(tmp_path, tiny_bundle):
    from device_agent.agent.metrics import MAX_MODELS, Outcome, RequestWindow

    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(tiny_bundle).sha256)
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "state", metrics_enabled=False))
    try:
        c = TestClient(create_app(agent))
        assert c.get("/metrics").status_code == 404
    finally:
        agent.close()
    w = RequestWindow()
    for i in range(MAX_MODELS * 3):  # many models over a long life: totals keep the newest MAX_MODELS
        w.record(f"{i:064x}", Outcome.OK, 0.001)
    assert len(w.totals()) == MAX_MODELS and w.models_evicted == MAX_MODELS * 2
    assert f"{MAX_MODELS * 3 - 1:064x}" in w.totals()


def test_real_prometheus_scrapes_a_real_agent(agent_process, prometheus, tiny_bundle):
    a = agent_process(tiny_bundle)
    with httpx.Client() as client:
        for _ in range(40):
            assert client.post(a.url + "/v2/models/tiny/infer", json=BODY).status_code == 200
        raw = client.get(a.url + "/metrics").content
    code, out = promtool_check(raw)
    assert code == 0, out
    prom = prometheus({"agent": f"127.0.0.1:{a.port}"})
    got = prom.wait_for('edgeship_requests_total{job="agent",outcome="ok"}')
    assert float(got[0]["value"][1]) == 40 and got[0]["metric"]["model"] == "tiny"
    q = prom.wait_for('histogram_quantile(0.5, sum by (le) (edgeship_inference_duration_seconds_bucket{job="agent"}))')
    assert 0 < float(q[0]["value"][1]) < 1.0
    assert prom.query('edgeship_active_model_info{job="agent"}')[0]["metric"]["release"] == "1"
    assert float(prom.query('process_resident_memory_bytes{job="agent"}')[0]["value"][1]) > 10e6
    assert prom.targets_up() == {"agent": "up"}
