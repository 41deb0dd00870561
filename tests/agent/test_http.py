"""The Open Inference Protocol (v2) contract and every bad request, through the real Starlette app."""

from __future__ import annotations

import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from device_agent.agent import Agent
from device_agent.config import AgentConfig
from device_agent.serving.http import create_app
from device_agent.store import Store

X = [[0.0, 0.5, 1.0, 1.5], [2.0, 2.5, 3.0, 3.5]]


@pytest.fixture
def served(tmp_path, bundles):
    store = Store(tmp_path / "state")
    refs = {n: store.install_bundle(bundles[n].path) for n in ("v1", "v2", "picker")}
    store.activate(refs["picker"].sha256)
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "state", max_body_bytes=4096))
    client = TestClient(create_app(agent, control_token="s3cret"), raise_server_exceptions=False)
    yield client, agent, refs
    agent.close()


def _req(idx=(0, 2), x=X, **over):
    body = {"id": "r1", "inputs": [
        {"name": "x", "shape": [len(x), 4], "datatype": "FP32", "data": [v for row in x for v in row]},
        {"name": "idx", "shape": [len(idx), 1], "datatype": "INT64", "data": list(idx)}]}
    body.update(over)
    return body


def test_health_and_metadata(served):
    c, agent, refs = served
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").status_code == 200
    assert c.get("/v2").json()["name"] == "edgeship-agent"
    meta = c.get("/v2/models/picker").json()
    assert meta["name"] == "picker" and meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1.1.0"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                              {"name": "idx", "datatype": "INT64", "shape": [-1, 1]}]
    assert meta["parameters"]["sha256"] == refs["picker"].sha256
    assert c.get("/v2/models/picker/ready").json() == {"name": "picker", "ready": True}
    assert c.get("/v2/models/picker/versions/1.1.0/ready").status_code == 200
    assert c.get("/v2/models/picker/versions/9.9.9/ready").status_code == 404


def test_infer_contract(served):
    c, agent, _ = served
    r = c.post("/v2/models/picker/infer", json=_req())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "picker" and body["model_version"] == "1.1.0" and body["id"] == "r1"
    outs = {o["name"]: o for o in body["outputs"]}
    direct = agent.infer({"x": np.array(X, np.float32), "idx": np.array([[0], [2]], np.int64)})
    assert outs["y"]["datatype"] == "FP32" and outs["y"]["shape"] == [2, 3]
    np.testing.assert_allclose(np.array(outs["y"]["data"]).reshape(2, 3), direct["y"], rtol=1e-6)
    np.testing.assert_allclose(np.array(outs["picked"]["data"]).reshape(2, 1), direct["picked"], rtol=1e-6)
    # nested data is accepted; requested outputs are honoured
    nested = _req(outputs=[{"name": "picked"}])
    nested["inputs"][0]["data"] = X
    only = c.post("/v2/models/picker/versions/1.1.0/infer", json=nested).json()
    assert [o["name"] for o in only["outputs"]] == ["picked"]


@pytest.mark.parametrize("mutate,status,needle", [
    (lambda b: b["inputs"][0].update(datatype="FP64"), 400, "datatype FP64 but the model takes FP32"),
    (lambda b: b["inputs"][1].update(datatype="INT32"), 400, "datatype INT32 but the model takes INT64"),
    (lambda b: b["inputs"][0].update(shape=[2, 5]), 400, "shape [2, 5] does not fit the model's [-1, 4]"),
    (lambda b: b["inputs"][0].update(shape=[3, 4]), 400, "8 values do not fill shape [3, 4]"),
    (lambda b: b["inputs"][0].update(data=["a"] * 8), 400, "data is not a FP32 array"),
    (lambda b: b["inputs"][0]["data"].__setitem__(0, None), 400, "data holds null"),  # not NaN
    (lambda b: b["inputs"][0]["data"].__setitem__(0, "7"), 400, 'data holds "7"'),  # not 7.0
    (lambda b: b["inputs"][1].update(data=[0.5, 1]), 400, "INT64 data must be integers"),  # not 0
    (lambda b: b["inputs"].pop(), 400, "missing input(s) ['idx']"),
    (lambda b: b["inputs"][0].update(name="z"), 400, "unknown input 'z'"),
    (lambda b: b["inputs"].append(dict(b["inputs"][0])), 400, "given twice"),
    (lambda b: b["inputs"][0].update(datatype="BYTES"), 400, "datatype BYTES but the model takes FP32"),
    (lambda b: b["inputs"][0].update(datatype="BF16"), 400, "'BF16' is not supported"),
    (lambda b: b.update(model_name="tiny"), 400, "\"model_name\" 'tiny' differs from the model in the path"),
    (lambda b: b["inputs"][0].pop("shape"), 400, "missing key(s) ['shape']"),
    (lambda b: b.update(inptus=[]), 400, "unknown request key(s) ['inptus']"),
    (lambda b: b.update(outputs=[{"name": "nope"}]), 400, "unknown output(s) ['nope']"),
    (lambda b: b["inputs"][1].update(data=[0, 7]), 500, "inference failed"),  # the engine raises
])
def test_bad_requests_get_a_clear_answer_and_the_agent_keeps_serving(served, mutate, status, needle):
    c, agent, _ = served
    body = _req()
    mutate(body)
    r = c.post("/v2/models/picker/infer", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert c.post("/v2/models/picker/infer", json=_req()).status_code == 200


def test_malformed_oversized_and_unknown(served):
    c, agent, _ = served
    for raw in (b"{", b"[1, 2]", b"\xff\xfe", b"null", b"[" * 2000 + b"]" * 2000):  # last: RecursionError
        r = c.post("/v2/models/picker/infer", content=raw)
        assert r.status_code == 400 and r.json()["error"], raw
    big = json.dumps(_req(x=[[1.0, 2.0, 3.0, 4.0]] * 200, idx=[0] * 200)).encode()
    r = c.post("/v2/models/picker/infer", content=big)
    assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit still holds while streaming
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]
    r = c.post("/v2/models/picker/infer", content=chunks())
    assert r.status_code == 413
    r = c.post("/v2/models/nope/infer", json=_req())
    assert r.status_code == 404 and "serving 'picker'" in r.json()["error"]
    assert c.get("/v2/models/nope").status_code == 404
    r = c.post("/v2/models/tiny/infer", json=_req())  # in the store, not the model being served
    assert r.status_code == 503 and "in the store but not loaded" in r.json()["error"]
    assert c.get("/v2/nothing").status_code == 404 and "error" in c.get("/v2/nothing").json()
    assert c.get("/v2/models/picker/infer").status_code == 405
    assert c.post("/v2/models/picker/infer", json=_req()).status_code == 200


def test_control_endpoints_need_the_token(served):
    c, agent, refs = served
    assert c.post("/edgeship/v1/rollback").status_code == 403
    assert c.post("/edgeship/v1/rollback", headers={"X-Edgeship-Token": "wrong"}).status_code == 403
    h = {"X-Edgeship-Token": "s3cret"}
    assert c.post("/edgeship/v1/rollback", headers=h).status_code == 409  # no previous yet
    agent.switch_to(refs["v2"].sha256)
    assert c.get("/v2/models/tiny").json()["versions"] == ["1.2.0", "1.1.0"]  # the served one first
    r = c.post("/edgeship/v1/rollback", headers=h)
    assert r.status_code == 200 and r.json()["active"]["sha256"] == refs["picker"].sha256
    st = c.get("/edgeship/v1/status", headers=h).json()
    assert st["serving"]["name"] == "picker" and "metrics" in st


def test_not_ready_without_a_model(tmp_path):
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "empty"))
    c = TestClient(create_app(agent))
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").status_code == 503
    r = c.post("/v2/models/tiny/infer", json=_req())
    assert r.status_code == 503 and "no model" in r.json()["error"]
    assert c.post("/edgeship/v1/rollback").status_code == 404  # no token: no control routes


def test_batched_http_requests_each_get_their_own_rows(tmp_path, bundles):
    import threading

    from device_agent.config import BatchingSection

    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(bundles["v1"].path).sha256)
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "state",
                                            batching=BatchingSection(max_batch_size=4, max_wait_ms=300.0)))
    seen = []
    agent.add_request_observer(lambda sha, ok, dt: seen.append(round(dt, 9)))
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    results, barrier = {}, threading.Barrier(4)
    with TestClient(create_app(agent)) as c:
        def one(i):
            x = [[float(i)] * 4]
            barrier.wait()
            r = c.post("/v2/models/tiny/infer", json={"inputs": [
                {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x[0]}]})
            results[i] = (r.status_code, r.json())
        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    agent.close()
    for i, (status, body) in results.items():
        assert status == 200, body
        want = np.full((1, 4), float(i), np.float32) @ w + b
        np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 3), want, rtol=1e-5)
    assert len(seen) == 4 and len(set(seen)) < 4  # at least two requests shared one engine call
