"""The real clients users bring, with their default settings, against a real `edgeship-agent run`:
NVIDIA's tritonclient over HTTP (binary tensor data on by default) and over gRPC.

(The KServe SDK is not in the suite: see docs/agent.md, "Clients", for why.)"""

from __future__ import annotations

import asyncio
import queue

import numpy as np
import pytest

from agentproc import agent_process, free_tcp_port

th = pytest.importorskip("tritonclient.http", reason="tritonclient[http,grpc] is in the dev extra")
tg = pytest.importorskip("tritonclient.grpc", reason="tritonclient[http,grpc] is in the dev extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 4
IDX = np.array([[0], [2]], np.int64)


@pytest.fixture(scope="module")
def picker(tmp_path_factory, bundles):
    with agent_process(tmp_path_factory.mktemp("picker"), bundles["picker"].path, grpc_port=free_tcp_port()) as a:
        _, port, serving = a
        yield f"127.0.0.1:{port}", f"127.0.0.1:{serving['grpc_port']}"


def _inputs(mod, x=X, idx=IDX):
    ins = [mod.InferInput("x", list(x.shape), "FP32"), mod.InferInput("idx", list(idx.shape), "INT64")]
    ins[0].set_data_from_numpy(x)  # defaults: binary data over HTTP, raw contents over gRPC
    ins[1].set_data_from_numpy(idx)
    return ins


def _check(result, x=X, idx=IDX):
    y = x @ W + B
    np.testing.assert_allclose(result.as_numpy("y"), y, rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("picked"), np.take_along_axis(y, idx, axis=1), rtol=1e-5)


@pytest.mark.parametrize("mod", [th, tg], ids=["http", "grpc"])
def test_health_metadata_config(picker, mod):
    c = mod.InferenceServerClient(picker[0] if mod is th else picker[1])
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("picker")
    assert c.is_model_ready("picker", "1.1.0") and c.is_model_ready("picker", "1")
    as_json = {"as_json": True} if mod is tg else {}
    meta = c.get_model_metadata("picker", **as_json)
    assert meta["name"] == "picker" and meta["versions"] == ["1.1.0"]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("x", "FP32", [-1, 4]), ("idx", "INT64", [-1, 1])]
    cfg = c.get_model_config("picker", **as_json)
    cfg = cfg.get("config", cfg)
    assert cfg["name"] == "picker" and cfg["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"]) for t in cfg["input"]] == [("x", "TYPE_FP32"), ("idx", "TYPE_INT64")]
    assert "binary_tensor_data" in c.get_server_metadata(**as_json)["extensions"]
    index = c.get_model_repository_index(**as_json)
    index = index.get("models", index) if isinstance(index, dict) else index
    assert [(m["name"], m["state"]) for m in index] == [("picker", "READY")]
    with pytest.raises(InferenceServerException, match="not served here"):
        c.get_model_metadata("nope")
    c.close()


@pytest.mark.parametrize("mod", [th, tg], ids=["http", "grpc"])
def test_infer_sync_async_and_statistics(picker, mod):
    c = mod.InferenceServerClient(picker[0] if mod is th else picker[1], concurrency=4) if mod is th else \
        tg.InferenceServerClient(picker[1])
    as_json = {"as_json": True} if mod is tg else {}
    before = c.get_inference_statistics("picker", **as_json)["model_stats"][0]
    _check(c.infer("picker", _inputs(mod)))  # several inputs, one INT64; outputs binary (the default)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    idx = np.array([[0], [1], [2], [1], [0]], np.int64)
    outs = [mod.InferRequestedOutput("picked"), mod.InferRequestedOutput("y")]
    r = c.infer("picker", _inputs(mod, x, idx), outputs=outs, request_id="r-7", model_version="1.1.0")
    _check(r, x, idx)
    assert r.get_response(**as_json)["id"] == "r-7"
    if mod is th:
        pending = [c.async_infer("picker", _inputs(mod)) for _ in range(4)]
        for p in pending:
            _check(p.get_result())
    else:
        done: queue.Queue = queue.Queue()
        for _ in range(4):
            c.async_infer("picker", _inputs(mod), callback=lambda result, error: done.put((result, error)))
        for _ in range(4):
            result, error = done.get(timeout=20)
            assert error is None, error
            _check(result)
    with pytest.raises(InferenceServerException, match="does not fit the model's"):
        c.infer("picker", _inputs(mod, np.zeros((2, 5), np.float32)))
    after = c.get_inference_statistics("picker", **as_json)["model_stats"][0]
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 6
    assert int(after["inference_stats"]["success"]["ns"]) > int(before["inference_stats"]["success"].get("ns", 0))
    c.close()


def test_http_aio_client(picker):
    aio = pytest.importorskip("tritonclient.http.aio")

    async def go():
        c = aio.InferenceServerClient(picker[0])
        try:
            assert await c.is_model_ready("picker")
            results = await asyncio.gather(*(c.infer("picker", _inputs(th)) for _ in range(3)))
            for r in results:
                _check(r)
        finally:
            await c.close()
    asyncio.run(go())


@pytest.mark.parametrize("mod", [th, tg], ids=["http", "grpc"])
def test_bytes_tensors(tmp_path, bundles, mod):
    with agent_process(tmp_path, bundles["words"].path, grpc_port=free_tcp_port()) as (_, port, serving):
        c = mod.InferenceServerClient(f"127.0.0.1:{port}" if mod is th else f"127.0.0.1:{serving['grpc_port']}")
        words = np.array(["cat".encode(), "é".encode(), b"bird"], dtype=np.object_)
        inp = mod.InferInput("s", [3], "BYTES")
        inp.set_data_from_numpy(words)
        r = c.infer("words", [inp])
        assert r.as_numpy("ids").tolist() == [1, 3, 0]
        assert r.as_numpy("same").tolist() == [b"cat", "é".encode(), b"bird"]
        c.close()
