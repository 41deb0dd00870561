"""Real agent processes for the tests: the command, its environment, waiting for it, and a
context manager that runs one on a fresh state dir (importable: tests/agent is on sys.path)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "device_agent.cli", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 20.0) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def agent_process(tmp: Path, bundle_path: Path, *, env: dict | None = None, **serving):
    """A real ``edgeship-agent run`` on a fresh state dir serving ``bundle_path``; yields
    ``(proc, http_port, serving)`` once /v2/health/ready answers, and stops it (SIGTERM) after.
    ``serving`` holds extra ``[serving]`` keys (``grpc_port=...``, ``max_connections=...``)."""
    from device_agent.store import Store

    store = Store(tmp / "state")
    store.activate(store.install_bundle(bundle_path).sha256)
    port = free_tcp_port()
    lines = ["[agent]", f'state_dir = "{tmp / "state"}"', "[serving]", f"port = {port}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in serving.items()]
    (tmp / "agent.toml").write_text("\n".join(lines) + "\n")
    log = open(tmp / "agent.log", "wb")
    proc = subprocess.Popen(agent_cmd("run", "--config", str(tmp / "agent.toml")), env=subprocess_env(**(env or {})),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        yield proc, port, serving
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


