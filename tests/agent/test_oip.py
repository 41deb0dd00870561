"""The whole Open Inference Protocol over HTTP, through the real Starlette app: the binary tensor
data extension, BYTES, NaN/Inf, classification, the optional request fields, per-version
metadata and readiness, model configuration, statistics and the repository index.
(The real tritonclient against a real `edgeship-agent run` is tests/agent/test_oip_clients.py.)"""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
from starlette.testclient import TestClient

from device_agent.agent import Agent
from device_agent.config import AgentConfig
from device_agent.serving.http import create_app
from device_agent.store import Store

X = np.array([[0.0, 0.5, 1.0, 1.5], [2.0, 2.5, 3.0, 3.5]], np.float32)
IDX = np.array([[0], [2]], np.int64)
HL = "Inference-Header-Content-Length"


def _strict(text: str | bytes):
    def refuse(tok):
        raise ValueError(f"bare {tok} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def served(tmp_path, bundles):
    store = Store(tmp_path / "state")
    refs = {n: store.install_bundle(bundles[n].path) for n in ("v1", "v2", "picker", "words")}
    store.activate(refs["picker"].sha256)
    agent = Agent(AgentConfig.for_state_dir(tmp_path / "state", max_body_bytes=1 << 16))
    client = TestClient(create_app(agent, control_token="t"), raise_server_exceptions=False)
    yield client, agent, refs, store
    agent.close()


def _binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HL: str(len(head)), "Content-Type": "application/octet-stream"}


def _split(r) -> tuple[dict, bytes]:
    n = int(r.headers[HL])
    return _strict(r.content[:n]), r.content[n:]


def test_binary_inputs_and_outputs_match_the_json_answer(served):
    c, agent, _, _ = served
    header = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
                         {"name": "idx", "shape": [2, 1], "datatype": "INT64", "parameters": {"binary_data_size": 16}}],
              "parameters": {"binary_data_output": True}}
    body, headers = _binary_body(header, X.tobytes(), IDX.tobytes())
    r = c.post("/v2/models/picker/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    head, raw = _split(r)
    want = agent.infer({"x": X, "idx": IDX})
    pos = 0
    for o in head["outputs"]:
        n = o["parameters"]["binary_data_size"]
        got = np.frombuffer(raw[pos:pos + n], np.float32).reshape(o["shape"])
        np.testing.assert_array_equal(got, want[o["name"]])
        pos += n
    assert pos == len(raw)
    # per output: one binary, one JSON; one input JSON, one binary
    header = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()},
                         {"name": "idx", "shape": [2, 1], "datatype": "INT64", "parameters": {"binary_data_size": 16}}],
              "outputs": [{"name": "picked", "parameters": {"binary_data": True}}, {"name": "y"}]}
    body, headers = _binary_body(header, IDX.tobytes())
    head, raw = _split(c.post("/v2/models/picker/infer", content=body, headers=headers))
    picked, y = head["outputs"]
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(2, 1), want["picked"])
    assert "data" not in picked and "parameters" not in y
    np.testing.assert_allclose(np.array(y["data"]).reshape(2, 3), want["y"], rtol=1e-6)


@pytest.mark.parametrize("header,chunks,status,needle", [
    (None, [b"\xff\xfe{"], 400, "needs the Inference-Header-Content-Length header"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 31}},
                 {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]}]},
     [X.tobytes()[:31]], 400, "31 bytes of binary data, but shape [2, 4] of FP32 takes 32 bytes"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
                 {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]}]},
     [X.tobytes(), b"xx"], 400, "2 bytes of binary data are not claimed"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 64}},
                 {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]}]},
     [X.tobytes()], 400, "binary_data_size 64 but only 32 bytes"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0] * 8,
                  "parameters": {"binary_data_size": 32}}, {"name": "idx", "shape": [2, 1], "datatype": "INT64",
                                                            "data": [0, 1]}]},
     [X.tobytes()], 400, "both \"data\" and \"binary_data_size\""),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}},
                 {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]}]},
     [b"\0"], 400, "shared memory extensions are not supported"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0] * 8}],
      "parameters": {"sequence_id": 3}}, [b"\0"], 400, "sequence (stateful) models are not supported"),
])
def test_bad_binary_requests_say_what_is_wrong(served, header, chunks, status, needle):
    c, *_ = served
    if header is None:  # binary bytes without the header: the error names the extension
        r = c.post("/v2/models/picker/infer", content=b"".join(chunks))
    else:
        body, headers = _binary_body(header, *chunks)
        r = c.post("/v2/models/picker/infer", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    bad = c.post("/v2/models/picker/infer", content=b"{}", headers={HL: "99"})
    assert bad.status_code == 400 and "Inference-Header-Content-Length is 99" in bad.json()["error"]


def test_nan_and_inf_stay_strict_json_and_travel_raw_in_binary(served):
    c, agent, _, _ = served
    data = ["NaN", "Infinity", "-Infinity", 1.0, 0.0, 0.0, 0.0, 0.0]
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data},
                       {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 0]}]}
    r = c.post("/v2/models/picker/infer", json=body)
    assert r.status_code == 200, r.text
    y = {o["name"]: o for o in _strict(r.text)["outputs"]}["y"]["data"]  # strict parse: no bare NaN
    assert "NaN" in y and all(isinstance(v, (float, str)) for v in y)
    x = np.array([[np.nan, np.inf, -np.inf, 1], [0, 0, 0, 0]], np.float32)
    want = agent.infer({"x": x, "idx": np.zeros((2, 1), np.int64)})["y"].ravel()
    got = np.array(y, dtype=np.float32)  # numpy reads the three words back
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    body["outputs"] = [{"name": "y", "parameters": {"binary_data": True}}]
    head, raw = _split(c.post("/v2/models/picker/infer", json=body))
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32), want)  # NaN bit patterns as they are
    for bad, needle in ((None, "send a number for every element"), ("nan", "send a number for every element"),
                        ("1.5e", "is not a FP32 array")):
        body["inputs"][0]["data"] = [bad] + [0.0] * 7
        r = c.post("/v2/models/picker/infer", json=body)
        assert r.status_code == 400 and needle in r.json()["error"], bad


def test_bytes_tensors_json_and_binary(served):
    c, agent, refs, store = served
    agent.switch_to(refs["words"].sha256)
    body = {"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES", "data": ["cat", "é", "bird"]}]}
    out = {o["name"]: o for o in c.post("/v2/models/words/infer", json=body).json()["outputs"]}
    assert out["ids"]["data"] == [1, 3, 0] and out["same"] == {"name": "same", "datatype": "BYTES", "shape": [3],
                                                               "data": ["cat", "é", "bird"]}
    raw = b"".join(struct.pack("<I", len(w)) + w for w in (b"dog", "é".encode()))
    header = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}],
              "outputs": [{"name": "same", "parameters": {"binary_data": True}}, {"name": "ids"}]}
    b, h = _binary_body(header, raw)
    head, rest = _split(c.post("/v2/models/words/infer", content=b, headers=h))
    assert rest == raw and head["outputs"][1]["data"] == [2, 3]
    bad = b"".join(struct.pack("<I", 2) + b"\xff\xfe" for _ in range(2))
    header["inputs"][0]["parameters"]["binary_data_size"] = len(bad)
    b, h = _binary_body(header, bad)
    r = c.post("/v2/models/words/infer", content=b, headers=h)
    assert r.status_code == 400 and "is not UTF-8 text" in r.json()["error"]
    body["inputs"][0]["data"] = [1, 2, 3]
    r = c.post("/v2/models/words/infer", json=body)
    assert r.status_code == 400 and "BYTES data must be strings" in r.json()["error"]
    meta = c.get("/v2/models/words").json()
    assert meta["inputs"] == [{"name": "s", "datatype": "BYTES", "shape": [-1]}]
    assert c.get("/v2/models/words/config").json()["input"][0]["data_type"] == "TYPE_STRING"


def test_optional_fields_classification_and_compression(served):
    c, agent, _, _ = served
    body = {"id": "k-1", "model_name": "picker", "model_version": "1.1.0", "parameters": {"priority": 1},
            "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist(), "parameters": {}},
                       {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 2]}],
            "outputs": [{"name": "y", "parameters": {"classification": 2}}]}
    r = c.post("/v2/models/picker/infer", json=body)  # what the KServe SDK sends: model_name in the body
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "k-1" and out["outputs"][0]["datatype"] == "BYTES" and out["outputs"][0]["shape"] == [2, 2]
    y = agent.infer({"x": X, "idx": IDX})["y"]
    top = [int(s.split(":")[1]) for s in out["outputs"][0]["data"]]
    assert top == np.argsort(-y, axis=1)[:, :2].ravel().tolist()
    assert abs(float(out["outputs"][0]["data"][0].split(":")[0]) - y[0].max()) < 1e-4
    body["model_version"] = "9.9.9"
    r = c.post("/v2/models/picker/infer", json=body)
    assert r.status_code == 404 and "version '9.9.9'" in r.json()["error"]
    del body["model_version"], body["outputs"]
    r = c.post("/v2/models/picker/infer", content=gzip.compress(json.dumps(body).encode()),
               headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["id"] == "k-1"
    r = c.post("/v2/models/picker/infer", content=b"x", headers={"Content-Encoding": "br"})
    assert r.status_code == 400 and "Content-Encoding 'br' is not supported" in r.json()["error"]
    bomb = gzip.compress(b" " * (1 << 20))
    r = c.post("/v2/models/picker/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "inflates to over the limit" in r.json()["error"]


def test_versions_config_statistics_and_repository_index(served):
    c, agent, refs, store = served
    assert set(c.get("/v2").json()["extensions"]) >= {"binary_tensor_data", "model_configuration", "statistics"}
    tiny = c.get("/v2/models/tiny/versions/2").json()  # a stored version, not loaded: metadata from model.json
    assert tiny["versions"] == ["1.2.0", "1.1.0"] and tiny["parameters"]["ready"] is False
    assert tiny["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert c.get("/v2/models/tiny/versions/1.1.0/ready").status_code == 503
    assert c.get("/v2/models/tiny/versions/7/ready").status_code == 404
    assert c.get("/v2/models/picker/versions/1/ready").json() == {"name": "picker", "ready": True}
    cfg = c.get("/v2/models/picker/config").json()
    assert cfg["name"] == "picker" and cfg["max_batch_size"] == 0 and cfg["platform"] == "onnxruntime_onnx"
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4]},
                            {"name": "idx", "data_type": "TYPE_INT64", "dims": [-1, 1]}]
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()},
                       {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [0, 2]}]}
    for _ in range(3):
        assert c.post("/v2/models/picker/infer", json=body).status_code == 200
    body["inputs"][1]["data"] = [0, 9]  # the engine raises: a failure
    assert c.post("/v2/models/picker/infer", json=body).status_code == 500
    st = c.get("/v2/models/picker/stats").json()["model_stats"]
    assert len(st) == 1 and st[0]["inference_count"] == 3 and st[0]["inference_stats"]["fail"]["count"] == 1
    assert st[0]["inference_stats"]["success"]["ns"] > 0 and st[0]["last_inference"] > 0
    everything = c.get("/v2/models/stats").json()["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} == {("tiny", "1.1.0"), ("tiny", "1.2.0"),
                                                                 ("picker", "1.1.0"), ("words", "1.1.0")}
    index = c.post("/v2/repository/index").json()
    assert {(m["name"], m["version"], m["state"]) for m in index} >= {("picker", "1.1.0", "READY"),
                                                                       ("tiny", "1.2.0", "UNAVAILABLE")}
    assert c.post("/v2/repository/index", json={"ready": True}).json() == [
        {"name": "picker", "version": "1.1.0", "state": "READY", "reason": ""}]
    assert c.post("/v2/repository/index", content=b"[").status_code == 400
