"""kill -9 of a real process writing a real queue file, checked against the documented
guarantee (device_agent/mqtt/queue.py, docs/mqtt.md "What queued means"):

- every message whose enqueue()/append() returned, and every staged message a later flush()
  covered, is on disk after the kill;
- a batch the kill interrupted is all or nothing: absent when the process died before its
  COMMIT (its callers were never told "queued", and staged messages riding in it are lost, as
  documented), present when it died just after;
- the file opens again, passes SQLite's integrity check, and ids keep growing.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_agent.mqtt.queue import Budgets, DurableQueue

CHILD = Path(__file__).with_name("queue_child.py")
ROOT = Path(__file__).resolve().parents[2]
BIG = Budgets(events_bytes=1 << 26, deploy_bytes=1 << 26, metrics_bytes=1 << 26, total_bytes=1 << 28)


def reports(text: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"q": [], "s": [], "f": []}
    for line in text.splitlines():
        tag, _, value = line.partition(" ")
        if tag in out and value.strip():
            out[tag].append(int(value))
    return out


def on_disk(path: Path) -> set[int]:
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in db.execute("SELECT msg_id FROM outbox")}
    finally:
        db.close()


def run_child(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGESHIP_TEST_KILL_AT", None)
    return subprocess.run([sys.executable, str(CHILD), *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def queued_ids(rep: dict[str, list[int]]) -> set[int]:
    """What the process was told is queued: enqueue returns, and staged ids up to a flush."""
    last_flush = max(rep["f"], default=0)
    return set(rep["q"]) | {i for i in rep["s"] if i <= last_flush}


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_kill_9_in_a_batch_keeps_everything_queued_and_the_batch_is_all_or_nothing(tmp_path, point):
    path = tmp_path / "queue.sqlite"
    proc = run_child(str(path), point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rep = reports(proc.stdout)
    assert "arm" in proc.stdout and "survived" not in proc.stdout
    queued = queued_ids(rep)
    assert len(rep["q"]) == 220 and len(queued) == 250
    accepted_only = {i for i in rep["s"] if i > max(rep["f"])}
    assert len(accepted_only) == 10
    disk = on_disk(path)
    assert queued <= disk, f"queued but missing after kill -9: {sorted(queued - disk)[:10]}"
    killed_batch = disk - queued
    if point == "before_commit":
        assert killed_batch == set() and not accepted_only & disk    # none of the batch: all or nothing
    else:  # committed, its callers not yet told: all of it, staged riders included
        assert len(killed_batch) == 35 and accepted_only <= disk
    q = DurableQueue(path, budgets=BIG)
    assert q.depth() == len(disk) and q.next_msg_id() > max(disk)


def _kill_randomly(path: Path, port: int) -> dict[str, list[int]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGESHIP_TEST_KILL_AT", None)
    proc = subprocess.Popen([sys.executable, str(CHILD), str(path), "random", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while seen.count(b"\nq ") < 300 or b"\nf " not in seen:   # well into the stream
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()
            seen += os.read(proc.stdout.fileno(), 65536)
        time.sleep(random.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        seen += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return reports(seen.decode())


def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path):
    """Three threads enqueue and one stages and flushes through a real MqttLink (broker away,
    so no row is acknowledged and deleted) until SIGKILL lands mid-stream; three times on the
    same file, each run reopening what the last kill left."""
    from toolchain.fleet.localbroker import free_port

    path = tmp_path / "queue.sqlite"
    queued: set[int] = set()
    for _ in range(3):
        rep = _kill_randomly(path, free_port())
        assert len(queued_ids(rep)) > 300 and not queued & queued_ids(rep)   # ids never reused
        queued |= queued_ids(rep)
        disk = on_disk(path)
        assert queued <= disk, f"queued but missing after kill -9: {sorted(queued - disk)[:10]}"
    q = DurableQueue(path, budgets=BIG)
    assert q.depth() == len(disk) and q.next_msg_id() > max(disk)
