"""A device install from the built wheel, as the README says: `make dist`'s wheel installed with
only the `agent` extra into a fresh venv (no system site-packages, no torch), then
`edgeship-agent install` + `run` from that venv serve a request; torch and onnx are absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from agentproc import free_tcp_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _source_copy(dest: Path) -> Path:
    """The project's files (tracked and new, not ignored) in ``dest``: building there leaves
    no build/ or .egg-info in the working tree."""
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def test_wheel_installs_with_the_agent_extra_and_serves(tmp_path, bundles):
    src = _source_copy(tmp_path / "src")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src)],
         env=_clean_env())
    (wheel,) = (tmp_path / "dist").glob("edgeship-*-py3-none-any.whl")
    venv = tmp_path / "device-venv"
    _run([sys.executable, "-m", "venv", str(venv)], env=_clean_env())  # its own site-packages only
    py, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip"]
    _run([*pip, "install", "-q", f"{wheel}[agent]"], env=_clean_env(), cwd=tmp_path)
    probe = _run([str(py), "-c", "import importlib.util as u, json, device_agent, sys; print(json.dumps("
                  "{m: u.find_spec(m) is not None for m in ('torch', 'onnx', 'openvino', 'toolchain', 'numpy', "
                  "'onnxruntime', 'uvicorn')} | {'file': device_agent.__file__, 'site': sys.flags.no_site}))"],
                 env=_clean_env(), cwd=tmp_path)
    found = json.loads(probe.stdout)
    assert found["file"].startswith(str(venv)), found  # the wheel's copy, not the source tree
    assert not found["torch"] and not found["onnx"] and not found["openvino"], found
    assert found["onnxruntime"] and found["uvicorn"] and found["numpy"], found
    agent = str(venv / "bin" / "edgeship-agent")
    port = free_tcp_port()
    out = json.loads(_run([agent, "install", "--prefix", str(tmp_path / "dev"), "--bundle", str(bundles["v1"].path),
                           "--port", str(port), "--json"], env=_clean_env(), cwd=tmp_path).stdout)
    proc = subprocess.Popen([agent, "run", "--config", out["config"]], env=_clean_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, timeout_s=60)
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/tiny/infer", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            res = json.loads(r.read())
        assert res["model_name"] == "tiny" and res["outputs"][0]["shape"] == [1, 3]
        loaded = _run([str(py), "-c", "import sys, device_agent.serving.server, device_agent.agent.core; "
                                      "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))"],
                      env=_clean_env(), cwd=tmp_path)
        assert loaded.stdout.strip() == "[]"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
