"""A model whose inference really kills the process (no fault injection): ONNX Runtime checks
integer division by zero but not INT64_MIN / -1, which traps on x86-64 (SIGFPE). The model
loads fine; it dies only when run on an input below its threshold (conftest.CRASH_BELOW).

- crash_gate: the golden set crashes the gate's child process (python -m
  device_agent.ota.gate_child); the real `edgeship-agent run` process stays up and keeps
  serving the old model with no restart, and the update ends failed (gate.crashed).
- crash_trial: the golden set passes, so the gate and the switch pass; a client request the
  model cannot take kills the agent in the trial; the crash is counted across restarts and at
  trial_max_crashes the restarted agent rolls back by itself (trial.crash_loop).
The fault-injection matrix (test_kill_matrix.py) still covers a kill at every state, including
the agent itself dying in the gate (the restart ends the update with gate.crashed)."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from .conftest import GOLDEN_X, PY, onnx_model
from .test_in_agent import BODY, _cli, _config, _journal, _port, _start_agent, _status, _stop, _wait_journal

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="INT64_MIN / -1 traps (SIGFPE) only on x86-64; arm returns a value")

CRASH_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [-100.0, 1.0, 2.0, 3.0]}]}

_PROBE = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(open(sys.argv[1], "rb").read(), providers=["CPUExecutionProvider"])
print("loaded", flush=True)
print(s.run(None, {"x": np.array([[0.5, 1.0, 2.0, 3.0]], np.float32)})[0].tolist(), flush=True)
s.run(None, {"x": np.array([[float(sys.argv[2]), 1.0, 2.0, 3.0]], np.float32)})
print("survived", flush=True)
"""


@pytest.mark.parametrize("kind,trigger", [("crash_gate", -1.0), ("crash_trial", -100.0)])
def test_model_loads_then_inference_kills_the_process(tmp_path, kind, trigger):
    """The premise, checked on the bare engine: load and a normal input work, the trigger kills."""
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_model(kind))
    p = subprocess.run([PY, "-c", _PROBE, str(path), str(trigger)], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGFPE, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.splitlines() == ["loaded", "[[2.0, 3.0, 5.0, 7.0]]"], p.stdout


def _dead(agent: subprocess.Popen, timeout_s: float = 60.0) -> int:
    try:
        return agent.wait(timeout_s)
    finally:
        if agent.poll() is None:
            agent.kill()


def _infer(port: int, body=BODY) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v2/models/m/infer", json=body, timeout=10)


def _events(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def _traffic(port: int, stop: threading.Event, codes: list) -> None:
    while not stop.is_set():
        try:
            r = _infer(port)
            codes.append((r.status_code, r.json().get("model_version")))
        except (httpx.HTTPError, ValueError) as e:
            codes.append((type(e).__name__, None))
        time.sleep(0.02)


def test_golden_set_crashing_the_gate_spares_the_serving_agent(env):
    """The gate runs the new model in a child process first: the child dies of SIGFPE, the
    running agent (same process, no restart) keeps serving the old model throughout."""
    pub = env.publish(env.bundle(release=2, kind="crash_gate"))
    old = json.loads((env.state / "pointers.json").read_text())["active"]["sha256"]
    port = _port()
    cfg = _config(env, port)
    agent = _start_agent(cfg, port)
    stop, codes = threading.Event(), []
    t = threading.Thread(target=_traffic, args=(port, stop, codes), daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        p = _cli("update", "--config", cfg, "--model", "m", "--json")
        time.sleep(0.3)
        stop.set()
        t.join(15)
        assert agent.poll() is None, agent.stderr.read()[-2000:]  # alive: no crash, no restart
        assert p.returncode == 1, (p.stdout, p.stderr[-2000:])
        events = _events(p.stdout)
        result = events[-1]["result"]
        assert (result["state"], result["reason"], result["sha256"]) == ("failed", "gate.crashed", pub.sha256), result
        failed = [e for e in events[:-1] if e.get("state") == "failed"]
        assert failed and "SIGFPE" in failed[-1]["detail"], events
        j = _journal(env)
        assert (j["state"], j["reason"]) == ("failed", "gate.crashed"), j["history"]
        assert len(codes) > 10 and set(codes) == {(200, "1.0.1")}, sorted(set(codes), key=str)
        st = _status(cfg)
        assert st["serving"]["sha256"] == st["active"]["sha256"] == old, st
        r = _infer(port)
        assert np.allclose(r.json()["outputs"][0]["data"], (GOLDEN_X[0] * 2 + 1).ravel())
        assert _infer(port, CRASH_BODY).status_code == 200  # the old model takes any input
        _stop(agent)
    finally:
        stop.set()
        if agent.poll() is None:
            agent.kill()


def test_local_update_with_a_gate_crash_fails_at_once(env):
    """No agent running: `edgeship-agent update` survives too (the child dies, not the CLI)."""
    env.publish(env.bundle(release=2, kind="crash_gate"))
    old = json.loads((env.state / "pointers.json").read_text())["active"]["sha256"]
    cfg = _config(env, _port())
    p = _cli("update", "--config", cfg, "--model", "m", "--json")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr[-2000:])
    result = _events(p.stdout)[-1]["result"]
    assert (result["state"], result["reason"]) == ("failed", "gate.crashed"), result
    assert "SIGFPE" in result["detail"], result
    assert json.loads((env.state / "pointers.json").read_text())["active"]["sha256"] == old
    assert _status(cfg)["active"]["release"] == 1


def _wait_serving(cfg: str, sha: str, timeout_s: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if _status(cfg)["serving"]["sha256"] == sha:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{sha[:12]} not serving: {_status(cfg)}")


def _crash_with_request(agent: subprocess.Popen, port: int) -> None:
    with pytest.raises(httpx.HTTPError):  # the connection dies with the process
        _infer(port, CRASH_BODY)
    assert _dead(agent) == -signal.SIGFPE


def test_model_crashing_on_live_traffic_in_the_trial_rolls_back_across_restarts(env):
    pub = env.publish(env.bundle(release=2, kind="crash_trial"))
    old = json.loads((env.state / "pointers.json").read_text())["active"]["sha256"]
    port = _port()
    # a long window so only the crashes can end it; canaries (golden inputs) pass
    cfg = _config(env, port, trial_requests=100000, trial_duration_s=120.0, trial_max_crashes=2)
    agent = _start_agent(cfg, port)
    cli = _cli("update", "--config", cfg, "--model", "m", "--json", popen=True)
    try:
        while json.loads(cli.stdout.readline())["state"] != "trial":
            pass
        assert _infer(port).json()["model_version"] == "1.0.2"  # the new model serves golden inputs
        _crash_with_request(agent, port)
        cli.communicate(timeout=30)
        j = _journal(env)
        assert (j["state"], j["trial_crashes"]) == ("trial", 0), j
        # restart 1: one crash counted, below trial_max_crashes: the trial resumes on the new model
        agent = _start_agent(cfg, port)
        _wait_serving(cfg, pub.sha256)
        assert _journal(env)["trial_crashes"] == 1
        _crash_with_request(agent, port)
        # restart 2: the second crash reaches trial_max_crashes: automatic rollback
        agent = _start_agent(cfg, port)
        j = _wait_journal(env, ("commit", "rolled_back", "failed"))
        assert (j["state"], j["reason"]) == ("rolled_back", "trial.crash_loop"), j["history"]
        assert "died 2 time(s)" in j["detail"], j["detail"]
        assert j["trial_crashes"] == 2, j
        st = _status(cfg)
        assert st["serving"]["sha256"] == st["active"]["sha256"] == old, st
        assert _infer(port, CRASH_BODY).json()["model_version"] == "1.0.1"
        _stop(agent)
    finally:
        for p in (agent, cli):
            if p.poll() is None:
                p.kill()
