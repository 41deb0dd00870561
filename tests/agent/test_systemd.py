"""The systemd unit (`systemd-analyze verify`) and the agent's side of it: READY=1, WATCHDOG=1 from
the serving loop and STOPPING=1 sent to a NOTIFY_SOCKET, as systemd's Type=notify expects."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from agentproc import agent_process
from device_agent.install import LIMIT_NOFILE, WATCHDOG_S, systemd_unit
from device_agent.sdnotify import Watchdog, notify, watchdog_interval_s


def _verify(path):
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_generated_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (make system-deps installs systemd's tools)")
    (tmp_path / "agent.toml").write_text("")
    unit = systemd_unit(config_path=tmp_path / "agent.toml", state_dir=tmp_path / "state", python=sys.executable)
    for line in ("Type=notify", "NotifyAccess=main", f"WatchdogSec={WATCHDOG_S}", f"LimitNOFILE={LIMIT_NOFILE}",
                 "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=full", "PrivateTmp=yes",
                 f"ReadWritePaths={tmp_path / 'state'}"):
        assert line in unit.splitlines(), line
    good = tmp_path / "edgeship-agent.service"
    good.write_text(unit)
    r = _verify(good)
    if r.returncode != 0 and "Failed to" in r.stderr and "bus" in r.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run in this container: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "broken.service"  # the check has teeth: a unit systemd cannot load fails it
    bad.write_text(unit.replace("Type=notify", "Type=notifyy").replace(f"ExecStart={sys.executable}",
                                                                      "ExecStart=/nonexistent/python"))
    assert _verify(bad).returncode != 0


def test_watchdog_pings_at_half_the_interval():
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None  # another process
    assert watchdog_interval_s(env={}) is None
    assert notify("READY=1", env={}) is False  # not under systemd: nothing happens
    now = [0.0]
    sent = []
    w = Watchdog(1.0, clock=lambda: now[0])
    import device_agent.sdnotify as sd

    real, sd.notify = sd.notify, lambda msg, env=None: sent.append(msg)
    try:
        for t in (0.0, 0.4, 0.9, 1.0, 1.5, 2.2):
            now[0] = t
            w.tick()
    finally:
        sd.notify = real
    assert sent == ["WATCHDOG=1"] * 3  # at 0.0, 1.0 and 2.2


def test_agent_notifies_ready_watchdog_and_stopping(tmp_path, bundles):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    got: list[str] = []

    def until(pred, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not pred():
            try:
                got.extend(sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                break
        return pred()
    try:
        env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}  # ping every 0.2 s
        with agent_process(tmp_path, bundles["v1"].path, env=env) as (proc, port, _):
            assert until(lambda: "READY=1" in got) and got.index("READY=1") == 0
            assert until(lambda: got.count("WATCHDOG=1") >= 3, 5.0)
            proc.send_signal(signal.SIGSTOP)  # a hung agent: the pings stop ...
            time.sleep(0.1)
            sock.settimeout(0.6)
            n = got.count("WATCHDOG=1")
            until(lambda: False, 0.6)
            assert got.count("WATCHDOG=1") <= n + 1
            proc.send_signal(signal.SIGCONT)  # ... and come back with the loop
            sock.settimeout(5)
            assert until(lambda: got.count("WATCHDOG=1") >= n + 3, 5.0)
            proc.terminate()
            assert until(lambda: "STOPPING=1" in got)
    finally:
        sock.close()
