"""Install under a prefix, then a real `edgeship-agent run` process: serving, CLI status/rollback
against the running agent under load, a second instance refused, SIGTERM exits cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import pytest

from device_agent.config import ConfigError, load_config
from device_agent.store import Store


def _cli(helpers, *args, check=True):
    r = subprocess.run(helpers.agent_cmd(*args), env=helpers.env(), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{args}: rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def test_install_run_status_rollback_sigterm(tmp_path, bundles, helpers, free_port):
    prefix = tmp_path / "prefix"
    out = json.loads(_cli(helpers, "install", "--prefix", str(prefix), "--bundle", str(bundles["v1"].path),
                          "--port", str(free_port), "--json").stdout)
    config = prefix / "etc/edgeship/agent.toml"
    unit = (prefix / "etc/systemd/system/edgeship-agent.service").read_text()
    assert out["config"] == str(config) and "Restart=on-failure" in unit and f"--config {config}" in unit
    cfg = load_config(config)
    assert cfg.serving.port == free_port and cfg.serving.host == "127.0.0.1"
    assert cfg.state_dir == prefix / "var/lib/edgeship"
    assert "# Largest request body accepted" in config.read_text()
    assert _cli(helpers, "install", "--prefix", str(prefix), "--bundle", str(bundles["v1"].path),
                check=False).returncode == 2  # refuses to overwrite without --force

    store = Store(cfg.state_dir)  # a second release arrives (as an update would leave it)
    store.activate(store.install_bundle(bundles["v2"].path).sha256)

    proc = subprocess.Popen(helpers.agent_cmd("run", "--config", str(config)), env=helpers.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{free_port}"
        helpers.wait_ready(base + "/v2/health/ready", proc)
        assert httpx.post(base + "/v2/models/tiny/infer", json=BODY).json()["model_version"] == "1.2.0"
        second = _cli(helpers, "run", "--config", str(config), check=False)
        assert second.returncode == 1 and "already running" in second.stderr
        again = _cli(helpers, "install", "--prefix", str(prefix), "--bundle", str(bundles["v1"].path),
                     "--port", str(free_port), "--force", check=False)
        assert again.returncode == 2 and "is running on this state dir; stop it" in again.stderr
        assert Store(cfg.state_dir).active().version == "1.2.0"  # not switched under the agent

        st = json.loads(_cli(helpers, "status", "--config", str(config), "--json").stdout)
        assert st["running"]["pid"] == proc.pid and st["active"]["version"] == "1.2.0"
        assert st["previous"]["version"] == "1.1.0" and st["serving"]["version"] == "1.2.0"

        failures, versions, stop = [], set(), threading.Event()

        def load():
            with httpx.Client(base_url=base, timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/v2/models/tiny/infer", json=BODY)
                        if r.status_code != 200:
                            failures.append(r.text)
                        else:
                            versions.add(r.json()["model_version"])
                    except httpx.HTTPError as e:
                        failures.append(repr(e))
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        rb = _cli(helpers, "rollback", "--config", str(config))
        assert "running agent" in rb.stdout and "1.1.0" in rb.stdout
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert failures == [] and versions == {"1.1.0", "1.2.0"}
        assert httpx.post(base + "/v2/models/tiny/infer", json=BODY).json()["model_version"] == "1.1.0"
        text = _cli(helpers, "status", "--config", str(config)).stdout
        assert f"running (pid {proc.pid}" in text and "tiny 1.1.0 (release 1" in text
        # another tool switches the pointers; SIGHUP makes the running agent follow them
        Store(cfg.state_dir).rollback()
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while httpx.post(base + "/v2/models/tiny/infer", json=BODY).json()["model_version"] != "1.2.0":
            assert time.time() < deadline, "SIGHUP did not reload the pointers"
            time.sleep(0.05)
        Store(cfg.state_dir).rollback()
        proc.send_signal(signal.SIGHUP)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {"model.loaded", "agent.started", "model.rolled_back", "agent.stopped"} <= {e["event"]["action"] for e in events}
    assert all({"@timestamp", "log.level", "message", "event", "service"} <= set(e) for e in events)
    assert not (cfg.state_dir / "agent.json").exists() and not (cfg.state_dir / "control.token").exists()
    # stopped: rollback switches the pointers directly
    rb = _cli(helpers, "rollback", "--config", str(config))
    assert "not running" in rb.stdout and Store(cfg.state_dir).active().version == "1.2.0"
    assert "agent      not running" in _cli(helpers, "status", "--config", str(config)).stdout
    missing = _cli(helpers, "status", "--state-dir", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_strict_config(tmp_path, helpers):
    p = tmp_path / "agent.toml"
    for text, needle in [
        ('[serving]\nprot = 1\n', "[serving]: unknown key(s) ['prot']"),
        ('[serving.batching]\nmax_batch = 4\n', "[serving] batching: unknown key(s) ['max_batch']"),
        ('[servin]\n', "unknown section(s) ['servin']"),
        ('[serving]\nport = "80"\n', "port: expected an integer"),
        ('[agent]\nlog_level = "loud"\n', "'loud' is not one of"),
        ('[serving]\nport = 70000\n', "not a TCP port"),
        ('[serving\n', "not valid TOML"),
        ('[mqtt]\nfleet = "a/b"\n', "[mqtt] fleet 'a/b' is not a valid topic level"),  # section's own check
    ]:
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(p)
        assert needle in str(e.value) and str(p) in str(e.value), str(e.value)
    r = _cli(helpers, "run", "--config", str(p), check=False)
    assert r.returncode == 2 and str(p) in r.stderr
    r = _cli(helpers, "run", "--config", str(tmp_path / "missing.toml"), check=False)
    assert r.returncode == 2 and "not found" in r.stderr


def test_install_with_updates_and_telemetry(tmp_path, bundles, helpers):
    from device_agent.install import InstallError, install

    root = tmp_path / "root.json"
    root.write_text(json.dumps({"signed": {"_type": "root", "version": 1}, "signatures": []}))
    with pytest.raises(InstallError, match="--trust-root"):
        install(bundle=bundles["v1"].path, prefix=tmp_path / "a", repository="http://127.0.0.1:1/repo")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InstallError, match="not a TUF root.json"):
        install(bundle=bundles["v1"].path, prefix=tmp_path / "a", trust_root=bad)
    assert not (tmp_path / "a" / "etc").exists()  # refused before writing anything
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    for b, needle in ((junk, "not a readable"), (tmp_path / "missing.tar", "no such file")):
        with pytest.raises(InstallError, match=needle):
            install(bundle=b, prefix=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # no state dir skeleton left behind
    from device_agent.mqtt.install import MqttInstall

    res = install(bundle=bundles["v1"].path, prefix=tmp_path / "b", trust_root=root,
                  repository="http://127.0.0.1:1/repo", mqtt=MqttInstall(broker="broker.local:1883", fleet="lab"))
    cfg = load_config(res["config"])
    assert cfg.section("update").repository_url == "http://127.0.0.1:1/repo"
    assert cfg.section("mqtt").host == "broker.local" and cfg.section("mqtt").fleet == "lab"
    assert (cfg.state_dir / "trust" / "root.json").read_bytes() == root.read_bytes()


def test_damaged_pointer_file_is_one_line_with_the_repair(tmp_path, bundles, helpers):
    prefix = tmp_path / "prefix"
    _cli(helpers, "install", "--prefix", str(prefix), "--bundle", str(bundles["v1"].path))
    config = str(prefix / "etc/edgeship/agent.toml")
    pointers = prefix / "var/lib/edgeship/pointers.json"
    pointers.write_text('{"schema_version": 1,')  # e.g. a damaged disk
    for cmd in ("status", "run", "rollback"):
        r = _cli(helpers, cmd, "--config", config, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "pointers.json: unreadable" in r.stderr and "install --force --bundle" in r.stderr
    pointers.unlink()  # the repair the message gives
    _cli(helpers, "install", "--prefix", str(prefix), "--bundle", str(bundles["v2"].path), "--force")
    assert json.loads(_cli(helpers, "status", "--config", config, "--json").stdout)["active"]["version"] == "1.2.0"
