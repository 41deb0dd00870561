"""Fixtures for the monitoring tests: real agent processes, a real mosquitto, a real Prometheus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from promserver import PROMETHEUS, PROMTOOL, Prometheus, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def need_prometheus() -> None:
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip("prometheus/promtool not found (Debian package 'prometheus'; `make system-deps`)")


class AgentProcess:
    """``edgeship-agent run`` on a state dir with one bundle active, on a free port."""

    def __init__(self, work: Path, bundle: Path, *, extra_toml: str = "", serving: dict | None = None) -> None:
        from device_agent.config import AgentConfig, dumps
        from device_agent.store import Store

        self.work = work
        state = work / "state"
        store = Store(state)
        ref = store.install_bundle(bundle)
        store.activate(ref.sha256)
        self.ref = ref
        self.port = free_port()
        self.log_path = work / "agent.log"
        cfg = AgentConfig.for_state_dir(state, port=self.port, **(serving or {}))
        self.config = work / "agent.toml"
        self.config.write_text(dumps(cfg) + extra_toml)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "AgentProcess":
        import httpx

        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "device_agent.cli", "run", "--config", str(self.config)],
                                     env=env(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("agent not ready")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def agent_process(tmp_path):
    started: list[AgentProcess] = []

    def make(bundle: Path, name: str = "agent", **kw) -> AgentProcess:
        a = AgentProcess(tmp_path / name, bundle, **kw).start()
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()


@pytest.fixture
def prometheus(tmp_path):
    need_prometheus()
    started: list[Prometheus] = []

    def make(targets: dict[str, str]) -> Prometheus:
        p = Prometheus(tmp_path / f"prom{len(started)}", targets).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    from toolchain.demo_ota import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("mon-bundles"), release=1).path
