"""Updates inside a real `edgeship-agent run` process: the CLI asks the running agent (control
route), a second update is refused with 409, requests during the update all succeed; an
update killed mid-trial is finished or rolled back when `edgeship-agent run` starts; polling."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

from .conftest import GOLDEN_X, PY, REPO

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": GOLDEN_X[0].ravel().tolist()}]}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(env, port: int, **update) -> str:
    base = dict(repository_url=env.url, trial_requests=5, trial_duration_s=3.0, trial_probe_interval_s=0.02,
                trial_min_requests=3)
    base.update(update)
    lines = [f"{k} = {json.dumps(v)}" for k, v in base.items()]
    p = env.tmp / "agent.toml"
    p.write_text(f'[agent]\nstate_dir = "{env.state}"\nlog_file = "{env.tmp / "agent.log"}"\n\n'
                 f'[serving]\nhost = "127.0.0.1"\nport = {port}\n\n[update]\n' + "\n".join(lines) + "\n")
    return str(p)


def _cli(*args: str, fault: str | None = None, popen: bool = False):
    e = dict(os.environ)
    e.pop("EDGESHIP_UPDATE_FAULT", None)
    if fault:
        e["EDGESHIP_UPDATE_FAULT"] = fault
    cmd = [PY, "-m", "device_agent.cli", *args]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=REPO)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=e, cwd=REPO)


def _start_agent(cfg: str, port: int) -> subprocess.Popen:
    e = dict(os.environ)
    e.pop("EDGESHIP_UPDATE_FAULT", None)
    proc = subprocess.Popen([PY, "-m", "device_agent.cli", "run", "--config", cfg], env=e, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("agent did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _status(cfg: str) -> dict:
    p = _cli("status", "--config", cfg, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _journal(env) -> dict:
    return json.loads((env.state / "update" / "journal.json").read_text())


def _wait_journal(env, states: tuple[str, ...], timeout_s: float = 40.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            j = _journal(env)
            if j["state"] in states:
                return j
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"journal not in {states}: {_journal(env)}")


class _Load:
    """Steady requests to the agent from a thread; every answer's status is kept."""

    def __init__(self, port: int, period_s: float = 0.01) -> None:
        self.url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        self.period_s, self.codes, self.versions = period_s, [], set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                r = c.post(self.url, json=BODY)
                self.codes.append(r.status_code)
                if r.status_code == 200:
                    self.versions.add(r.json()["model_version"])
                time.sleep(self.period_s)

    def __enter__(self) -> "_Load":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(15)


def test_cli_update_runs_inside_the_running_agent(env):
    """No canaries (trial_probe_interval_s = 0): the trial can only pass on the server's traffic."""
    pub = env.publish(env.bundle(release=2, kind="good2"))
    port = _port()
    cfg = _config(env, port, trial_probe_interval_s=0.0, trial_requests=100, trial_duration_s=60.0)
    agent = _start_agent(cfg, port)
    try:
        with _Load(port, period_s=0.03) as load:  # ~30 req/s: the trial lasts a few seconds
            time.sleep(0.3)
            cli = _cli("update", "--config", cfg, "--model", "m", "--json", popen=True)
            first = json.loads(cli.stdout.readline())
            assert first["state"] == "fetch", first
            # a second update while the first runs: refused by the agent with 409
            running = _status(cfg)["running"]
            token_file = env.state / "control.token"
            assert token_file.stat().st_mode & 0o777 == 0o600, oct(token_file.stat().st_mode)
            token = token_file.read_text().strip()
            r = httpx.post(running["url"] + "/edgeship/v1/update", json={"model": "m"},
                           headers={"X-Edgeship-Token": token}, timeout=10)
            assert r.status_code == 409 and "already running" in r.json()["error"], r.text
            second = _cli("update", "--config", cfg, "--model", "m")
            assert second.returncode == 1 and "409" in second.stderr, second.stderr
            out, err = cli.communicate(timeout=90)
            time.sleep(0.3)
        assert cli.returncode == 0, (out, err)
        lines = [json.loads(x) for x in out.splitlines()]
        assert [e["state"] for e in [first] + lines[:-1]] == ["fetch", "verify", "stage", "gate", "switch",
                                                               "trial", "commit"]
        result = lines[-1]["result"]
        assert (result["state"], result["reason"], result["sha256"]) == ("commit", "ok", pub.sha256)
        n, rest = result["detail"].split(" requests, ", 1)
        assert int(n) >= 100 and rest.startswith("0 errors"), result  # the server's traffic
        assert load.codes and all(c == 200 for c in load.codes), sorted(set(load.codes))
        assert load.versions == {"1.0.1", "1.0.2"}  # served by both models, none failed
        st = _status(cfg)
        assert st["serving"]["sha256"] == st["active"]["sha256"] == pub.sha256
        assert st["previous"]["release"] == 1
        assert (st["update"]["state"], st["update"]["release"], st["update"]["reason"]) == ("commit", 2, "ok")
        text = _cli("status", "--config", cfg).stdout
        assert "update     m release 2: commit (ok)" in text, text
        bad = httpx.post(running["url"] + "/edgeship/v1/update", json={"model": "m", "release": "x"},
                         headers={"X-Edgeship-Token": token}, timeout=10)
        assert bad.status_code == 400 and "release" in bad.json()["error"]
        assert httpx.post(running["url"] + "/edgeship/v1/update", json={"model": "m"},
                          timeout=10).status_code == 403
    finally:
        _stop(agent)


@pytest.mark.parametrize("policy,state,reason,release", [
    ("rollback", "rolled_back", "trial.interrupted", 1),
    ("resume_trial", "commit", "ok", 2),
])
def test_run_recovers_an_update_killed_mid_trial(env, policy, state, reason, release):
    pub = env.publish(env.bundle(release=2, kind="good2"))
    port = _port()
    cfg = _config(env, port, recovery_policy=policy)
    p = _cli("update", "--config", cfg, "--model", "m", "--json", fault="kill:trial:enter")
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr)
    assert _journal(env)["state"] == "trial"
    assert json.loads((env.state / "pointers.json").read_text())["active"]["sha256"] == pub.sha256
    agent = _start_agent(cfg, port)
    try:
        j = _wait_journal(env, ("commit", "rolled_back", "failed"))
        assert (j["state"], j["reason"]) == (state, reason), j["history"]
        st = _status(cfg)
        assert st["serving"]["release"] == st["active"]["release"] == release, st
        assert (st["update"]["state"], st["update"]["reason"]) == (state, reason)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/m/infer", json=BODY, timeout=10)
        assert r.status_code == 200 and r.json()["model_version"] == f"1.0.{release}"
    finally:
        _stop(agent)


def test_run_polls_and_updates_the_active_model(env):
    port = _port()
    cfg = _config(env, port, poll_interval_s=0.3)
    agent = _start_agent(cfg, port)
    try:
        assert _status(cfg)["serving"]["release"] == 1
        pub = env.publish(env.bundle(release=2, kind="good2"))
        j = _wait_journal(env, ("commit", "rolled_back", "failed"))
        assert (j["state"], j["reason"], j["target_sha256"]) == ("commit", "ok", pub.sha256), j["history"]
        assert _status(cfg)["serving"]["sha256"] == pub.sha256
    finally:
        _stop(agent)


def test_local_update_holds_the_state_dir(env):
    """With no agent running the CLI updates in its own process and holds agent.lock meanwhile:
    `edgeship-agent run` started during it refuses to share the store."""
    env.publish(env.bundle(release=2, kind="good2"))
    port = _port()
    cfg = _config(env, port, trial_requests=100000, trial_duration_s=3.0)
    cli = _cli("update", "--config", cfg, "--model", "m", "--json", popen=True)
    try:
        while json.loads(cli.stdout.readline())["state"] != "trial":
            pass
        run = subprocess.run([PY, "-m", "device_agent.cli", "run", "--config", cfg], capture_output=True,
                             text=True, timeout=60, cwd=REPO)
        assert run.returncode == 1 and "already running" in run.stderr, run.stderr
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, (out, err)
        assert json.loads(out.splitlines()[-1])["result"]["state"] == "commit"
    finally:
        if cli.poll() is None:
            cli.kill()


def test_agent_stopped_during_an_update_in_it_rolls_back_and_exits_cleanly(env):
    env.publish(env.bundle(release=2, kind="good2"))
    old = json.loads((env.state / "pointers.json").read_text())["active"]["sha256"]
    port = _port()
    cfg = _config(env, port, trial_requests=100000, trial_duration_s=60.0)
    agent = _start_agent(cfg, port)
    cli = _cli("update", "--config", cfg, "--model", "m", "--json", popen=True)
    try:
        while json.loads(cli.stdout.readline())["state"] != "trial":
            pass
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, agent.stderr.read()
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 1, (out, err)
        # shutdown cancels the update first, so the client still gets its end
        assert json.loads(out.splitlines()[-1])["result"]["state"] == "rolled_back", out
        j = _journal(env)
        assert (j["state"], j["reason"]) == ("rolled_back", "aborted.cancelled"), j["history"]
        assert json.loads((env.state / "pointers.json").read_text())["active"]["sha256"] == old
    finally:
        for p in (agent, cli):
            if p.poll() is None:
                p.kill()
