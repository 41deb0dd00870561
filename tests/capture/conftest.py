"""Fixtures of the capture tests: a real mosquitto, the operator's keys, a tiny bundle, and a
real `edgeship-agent run` with [mqtt] and [capture] that can be killed and restarted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests" / "agent"))

from agentproc import agent_cmd, free_tcp_port, subprocess_env, wait_ready  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    from toolchain.demo_ota import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("capture-bundle"), release=1)


class AgentProc:
    """A real agent process on one state dir; ``restart()`` and ``kill()`` keep the state."""

    def __init__(self, tmp: Path, bundle: Path, *, broker_port: int, operator_root: Path, device: str,
                 capture: str) -> None:
        from device_agent.store import Store

        self.tmp, self.state = tmp, tmp / "state"
        store = Store(self.state)
        store.activate(store.install_bundle(bundle).sha256)
        self.port = free_tcp_port()
        self.device = device
        (tmp / "agent.toml").write_text("\n".join([
            "[agent]", f"state_dir = {json.dumps(str(self.state))}", "[serving]", f"port = {self.port}",
            "[mqtt]", 'fleet = "f1"', f'device_id = "{device}"', f"port = {broker_port}",
            f"operator_root = {json.dumps(str(operator_root))}", "reconnect_min_s = 1", "reconnect_max_s = 1",
            "metrics_interval_s = 60.0", capture]) + "\n")
        self.proc = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "AgentProc":
        self.log = open(self.tmp / "agent.log", "ab")
        self.proc = subprocess.Popen(agent_cmd("run", "--config", str(self.tmp / "agent.toml")), env=subprocess_env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(f"{self.url}/v2/health/ready", self.proc, timeout_s=30)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def infer(self, client, x, *, expected=None) -> dict:
        body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
        if expected is not None:
            body["parameters"] = {"edgeship_expected": expected}
        r = client.post(f"{self.url}/v2/models/tiny/infer", json=body)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def capture_agent(tmp_path, broker, operator_keys, tiny_bundle):
    made = []

    def make(capture: str, *, device: str = "cap1", bundle: Path | None = None) -> AgentProc:
        a = AgentProc(tmp_path / f"agent-{device}", bundle or tiny_bundle.path, broker_port=broker.port,
                      operator_root=operator_keys.root, device=device, capture=capture).start()
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()
