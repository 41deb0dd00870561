"""A signed update end to end: publish release 2, the device fetches, gates, switches, trials, commits."""

from __future__ import annotations

import numpy as np

from device_agent.ota import Reason, State

from .conftest import GOLDEN_X


def test_update_commits_and_serves_new_release(env):
    b2 = env.bundle(release=2, kind="good2")
    pub = env.publish(b2)
    store, agent, up = env.device()
    events = []
    res = up.update("m", on_event=events.append)
    assert res.state is State.COMMIT, res
    assert res.reason is Reason.OK
    assert store.active().sha256 == pub.sha256 and store.active().release == 2
    assert store.previous().release == 1
    assert agent.current().ref.sha256 == pub.sha256
    np.testing.assert_allclose(agent.infer({"x": GOLDEN_X[0]})["y"], GOLDEN_X[0] * 2 + 1)
    assert [e.state for e in events] == ["fetch", "verify", "stage", "gate", "switch", "trial", "commit"]
    # nothing newer: the next update is a no-op that changes nothing
    res2 = up.update("m")
    assert res2.state is State.ABORTED and res2.reason is Reason.UP_TO_DATE
    agent.close()


def test_polling_hook_finds_and_installs_a_new_release(env):
    from device_agent.ota.poll import Poller

    store, agent, up = env.device()
    poller = Poller(up, interval_s=0.1).start()
    try:
        pub = env.publish(env.bundle(release=2, kind="good2"))
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (up.last() and up.last().finished):
            time.sleep(0.05)
        assert up.last().state is State.COMMIT, up.last()
        assert store.active().sha256 == pub.sha256 and agent.current().ref.sha256 == pub.sha256
    finally:
        poller.stop()
        agent.close()


def test_cli_check_and_update(env):
    import json
    import subprocess

    from .conftest import PY, REPO

    cfg = env.tmp / "agent.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{env.state}"\nlog_file = "{env.tmp / "log"}"\n\n'
                   f'[update]\nrepository_url = "{env.url}"\ntrial_requests = 3\ntrial_probe_interval_s = 0.02\n')
    run = lambda *a: subprocess.run([PY, "-m", "device_agent.cli", "update", "--config", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120, cwd=REPO)
    p = run("--model", "m", "--check", "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == {"model": "m", "available": None}
    env.publish(env.bundle(release=2, kind="good2"))
    p = run("--model", "m", "--check")
    assert p.returncode == 0 and "release 2 available" in p.stdout
    p = run("--model", "m")
    assert p.returncode == 0, p.stderr
    assert "commit" in p.stdout and "trial" in p.stdout
    p = run("--model", "m", "--release", "1")
    assert p.returncode == 1 and "security.release_rollback" in p.stdout


def test_no_repository_configured_says_how_to_fix(env):
    store, agent, up = env.device(repository_url="")
    before = env.snapshot()
    res = up.update("m")
    assert res.state is State.FAILED and res.reason is Reason.NO_SUCH_TARGET
    assert "repository_url is empty" in res.detail and "restart the agent" in res.detail and "--repo" in res.detail
    assert env.snapshot() == before
    agent.close()


def test_expired_repository_is_renewed_by_refresh_without_a_new_release(env):
    import time

    import pytest

    from toolchain.ota.errors import OtaPublishError
    from toolchain.ota.publish import refresh

    ts = (env.repo / "metadata" / "timestamp.json").read_bytes()
    with pytest.raises(OtaPublishError, match="--expires-days must be > 0"):
        env.publish(env.bundle(release=2, kind="good2"), expires_days=0)
    assert (env.repo / "metadata" / "timestamp.json").read_bytes() == ts  # nothing published
    with pytest.raises(OtaPublishError, match="--timestamp-expires-days must be > 0"):
        refresh(repo_dir=env.repo, keys_dir=env.keys, timestamp_expires_days=-1)

    env.publish(env.bundle(release=2, kind="good2"), expires_days=1e-5)  # targets+snapshot: ~1 s
    time.sleep(1.5)
    store, agent, up = env.device()
    assert up.update("m").reason is Reason.EXPIRED_METADATA
    refresh(repo_dir=env.repo, keys_dir=env.keys)  # the timestamp alone does not renew them
    assert up.update("m").reason is Reason.EXPIRED_METADATA
    refresh(repo_dir=env.repo, keys_dir=env.keys, expires_days=30)
    res = up.update("m")
    assert res.state is State.COMMIT and store.active().release == 2, res
    agent.close()


def test_failed_publish_leaves_no_bundle_and_targets_are_world_readable(env):
    import stat

    import pytest

    from toolchain.ota.errors import KeyStoreError
    from toolchain.ota.keys import init_keys
    from toolchain.ota.publish import publish

    other = env.tmp / "other-keys"
    init_keys(keys_dir=other)
    before = sorted(p.name for p in (env.repo / "targets").rglob("*"))
    b2 = env.bundle(release=2, kind="good2")
    with pytest.raises(KeyStoreError, match="private key"):  # not this repository's targets key
        publish(bundle=b2, repo_dir=env.repo, keys_dir=other)
    assert sorted(p.name for p in (env.repo / "targets").rglob("*")) == before
    env.publish(b2)
    for f in (env.repo / "targets").rglob("*.tar"):  # a static server under another user reads them
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, oct(f.stat().st_mode)
