"""Slowloris against a real `edgeship-agent run`: 2,000 half-open connections held open while a
well-behaved client sends inference requests, side by side with the same client on an idle server.

Setup: the agent with its defaults (header timeout 10 s, connection cap = open-file limit less
256), the benchmark process's RLIMIT_NOFILE raised to its hard limit as the systemd unit's
LimitNOFILE does (the agent inherits it and raises its own soft limit the same way), a 16x16
MLP on ONNX Runtime. Each round measures the client on the idle server, then opens 2,000
connections that send part of a request head and stop (any the server closes is reopened at
once, so 2,000 stay held), measures the client again, and closes them.

Targets (``TARGETS``): 0 failed requests under attack (exact), and under-attack p50 <= 1.2 x
the idle p50 of the same round, judged over the rounds by the shared rules (``_verdict``:
spread, load during the run). Exit 1 on FAIL, 3 when inconclusive, else 0.
Usage: ``python benchmarks/agent_slowloris.py [--connections N] [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _agent_rig import active_store, free_port, make_bundle, spawn_agent, wait_ready, write_config  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

RATIO_LIMIT = 1.2
TARGETS = {
    "failed": Target("failed requests under attack (all rounds)", "<=", 0, fmt=".0f", load="none"),
    # idle and attacked phases of a round run back to back: load moves the ratio either way
    "ratio": Target("p50 under attack / idle p50 (same round)", "<=", RATIO_LIMIT, "x", fmt=".2f"),
}
HEAD = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: device\r\nContent-Type: application/json\r\nContent-Le"


class Attack:
    """``n`` half-open connections, reopened as soon as the server closes one."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n, self.socks, self.reopened = port, n, [], 0
        self._stop = threading.Event()
        for _ in range(n):
            self.socks.append(self._open())
        self._t = threading.Thread(target=self._hold, daemon=True)
        self._t.start()

    def _open(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(HEAD)
        s.setblocking(False)
        return s

    def _hold(self) -> None:
        while not self._stop.wait(0.5):
            for i, s in enumerate(self.socks):
                try:
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    s.close()
                    self.socks[i] = self._open()
                    self.reopened += 1

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        for s in self.socks:
            s.close()


def client(port: int, n: int) -> tuple[list[float], int]:
    """``n`` keep-alive POSTs; per-request latencies (s) and the number that failed."""
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]})
    lat, failed = [], 0
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            c.request("POST", "/v2/models/mlp/infer", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            ok = r.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        lat.append(time.perf_counter() - t0)
        failed += not ok
    c.close()
    return lat, failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=400, help="client requests per phase (default 400)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # as the unit's LimitNOFILE does
    rows = []
    with tempfile.TemporaryDirectory(prefix="slowloris-") as tmpd, LoadMonitor() as mon:
        tmp = Path(tmpd)
        b = make_bundle(tmp, release=1, dim=16, layers=1)
        active_store(tmp / "state", b.path)
        port = free_port()
        proc = spawn_agent(write_config(tmp / "agent.toml", tmp / "state", port))
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            client(port, 50)  # warm up
            for _ in range(args.rounds):
                idle, idle_failed = client(port, args.requests)
                attack = Attack(port, args.connections)
                time.sleep(1.0)  # the server accepts and parses 2,000 heads first
                warm, warm_failed = client(port, 50)  # counted as failures, not as latency
                under, failed = client(port, args.requests)
                failed += warm_failed
                held = sum(1 for s in attack.socks if s.fileno() >= 0)
                attack.close()
                time.sleep(1.0)  # and closes them before the next idle phase
                rows.append((float(np.median(idle)), float(np.median(under)), failed + idle_failed, held,
                             attack.reopened))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return report(rows, args, (soft, hard), mon.load())


def verdicts(rows, *, load: Load | None) -> Report:
    """Rows are ``(idle p50 s, attacked p50 s, failed, held, reopened)`` per round (pure)."""
    rep = Report()
    rep.judge(TARGETS["failed"], sum(r[2] for r in rows) if rows else [], exact=True, load=load)
    rep.judge(TARGETS["ratio"], [r[1] / r[0] for r in rows], load=load)
    return rep


def report(rows, args, nofile, load: Load | None) -> int:
    print(f"slowloris: {args.connections} half-open connections held against edgeship-agent run (defaults: "
          f"header timeout 10 s, cap = open-file limit - 256; RLIMIT_NOFILE {nofile[0]} -> {nofile[1]}), "
          f"keep-alive client, {args.requests} requests per phase, {args.rounds} rounds")
    for i, (idle, under, failed, held, reopened) in enumerate(rows):
        print(f"  round {i + 1}: idle p50 {idle * 1e3:.3f} ms, under attack p50 {under * 1e3:.3f} ms "
              f"({under / idle:.2f} x), failed {failed}, held {held}, reopened {reopened}")
    rep = verdicts(rows, load=load)
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
