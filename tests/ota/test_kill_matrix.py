"""kill -9 at every state: the real `edgeship-agent update` process SIGKILLs itself when it
enters (or leaves) a state, then is restarted until it finishes. Recovery rule: before the
switch the old model stays; between switch and commit the trial resumes (crash counted) or
rolls back; after commit the new model stays; a state that keeps crashing ends the update."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from .conftest import GOLDEN_X, PY

NEW, OLD = "new", "old"

CASES = [
    # (fault spec, expected final state, reason, which model serves)
    ("kill:fetch:enter", "commit", "ok", NEW),
    ("kill:fetch:leave", "commit", "ok", NEW),
    ("kill:verify:enter", "commit", "ok", NEW),
    ("kill:stage:enter", "commit", "ok", NEW),
    ("kill:stage:leave", "commit", "ok", NEW),
    ("kill:gate:enter", "failed", "gate.crashed", OLD),
    ("kill:switch:enter", "failed", "switch.failed", OLD),
    ("kill:switch:leave", "commit", "ok", NEW),
    ("kill:trial:enter", "commit", "ok", NEW),
    ("kill:trial:leave", "commit", "ok", NEW),
    ("kill:commit:enter", "commit", "ok", NEW),
    ("kill:fetch:enter:always", "failed", "state.crash_loop", OLD),
    ("kill:trial:enter:always", "rolled_back", "trial.crash_loop", OLD),
]


def _config(env) -> str:
    p = env.tmp / "agent.toml"
    p.write_text(f"""[agent]
state_dir = "{env.state}"
log_file = "{env.tmp / 'agent.log'}"

[update]
repository_url = "{env.url}"
trial_requests = 5
trial_duration_s = 3.0
trial_probe_interval_s = 0.02
trial_min_requests = 3
max_state_entries = 3
trial_max_crashes = 2
""")
    return str(p)


def _run(cfg: str, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("EDGESHIP_UPDATE_FAULT", None)
    if fault:
        env["EDGESHIP_UPDATE_FAULT"] = fault
    return subprocess.run([PY, "-m", "device_agent.cli", "update", "--config", cfg, "--json", *extra],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("fault,state,reason,serving", CASES, ids=[c[0] for c in CASES])
def test_kill_at_state_then_restart(env, fault, state, reason, serving):
    pub = env.publish(env.bundle(release=2, kind="good2"))
    old_sha = json.loads((env.state / "pointers.json").read_text())["active"]["sha256"]
    cfg = _config(env)
    p = _run(cfg, "--model", "m", fault=fault)
    if fault != "kill:commit:enter" or p.returncode != 0:
        assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr)
    # restart (as systemd would) until the update is finished; always-faults keep firing
    for _ in range(6):
        p = _run(cfg, fault=fault if fault.endswith(":always") else None)
        if p.returncode != -signal.SIGKILL:
            break
    assert p.returncode in (0, 1), (p.returncode, p.stdout, p.stderr)
    journal = json.loads((env.state / "update" / "journal.json").read_text())
    assert (journal["state"], journal["reason"]) == (state, reason), journal["history"]
    ptr = json.loads((env.state / "pointers.json").read_text())
    want = pub.sha256 if serving == NEW else old_sha
    assert ptr["active"]["sha256"] == want
    # a consistent store: every stored model is complete and the active one serves
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.store import Store

    store = Store(env.state)
    for ref in store.models():
        assert store.verify(ref.sha256) == []
    assert not list((env.state / "tmp").iterdir())
    with Agent(AgentConfig.for_state_dir(env.state), store=store) as agent:
        assert agent.current().ref.sha256 == want
        np.testing.assert_allclose(agent.infer({"x": GOLDEN_X[0]})["y"], GOLDEN_X[0] * 2 + 1, rtol=1e-6)
    if fault.endswith(":always") and "fetch" in fault:
        restarts = [h for h in journal["history"] if h[0] == "fetch" and h[2] == "restart"]
        assert len(restarts) == 3  # the breaker, not luck, ended it (max_state_entries = 3)
