"""Helpers of the monitoring tests (a uniquely named module: ``conftest`` names clash across
test directories): a real agent process on a state dir, the environment for subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promserver import PROMETHEUS, PROMTOOL, Prometheus, free_port  # noqa: F401  (re-exported)

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


