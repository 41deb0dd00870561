"""Rollback under a steady local load (issue 4 figure): zero failed requests, switch done < 1 s.

A real ``edgeship-agent run`` serves release 2 of a model (release 1 is the previous one).
An open-loop load generator sends POST /v2/models/{m}/infer at a fixed rate (default 200
requests/s, each request scheduled at t0 + i/rate, so a stall shows up as latency, not as
a lower rate). Midway, ``edgeship-agent rollback`` is run as a user would run it; the
figures are the rollback command's own duration, the time from its start to the first
answer from the rolled-back model, and every request's outcome.

Usage: ``python benchmarks/agent_rollback_under_load.py [--rate 200] [--seconds 6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_overhead import ROOT, active_store, free_port, make_bundle, spawn_agent, stop, wait_ready, write_config  # noqa: E402


def _load(port: int, body: bytes, rate: float, seconds: float, workers: int, results: list, t_start: float) -> None:
    import http.client

    n_total = int(rate * seconds)
    counter = iter(range(n_total))
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = t_start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v2/models/mlp/infer", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                version = json.loads(data)["model_version"] if r.status == 200 else None
                results.append((t0, time.perf_counter(), r.status, version))
            except Exception as e:  # a dropped connection is a failed request
                results.append((t0, time.perf_counter(), repr(e), None))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        b1 = make_bundle(tmp, release=1, dim=args.dim, layers=4, scale=1.0)
        b2 = make_bundle(tmp, release=2, dim=args.dim, layers=4, scale=0.5)
        state = tmp / "state"
        active_store(state, b1.path, b2.path)
        port = free_port()
        cfg = write_config(tmp / "agent.toml", state, port)
        proc = spawn_agent(cfg)
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            body = json.dumps({"inputs": [{"name": "x", "shape": [1, args.dim], "datatype": "FP32",
                                           "data": np.ones(args.dim).tolist()}]}).encode()
            results: list = []
            t_start = time.perf_counter() + 0.2
            loader = threading.Thread(target=_load, args=(port, body, args.rate, args.seconds, args.workers,
                                                          results, t_start))
            loader.start()
            time.sleep(0.2 + args.seconds / 2)
            env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            r0 = time.perf_counter()
            rb = subprocess.run([sys.executable, "-m", "device_agent.cli", "rollback", "--config", str(cfg), "--json"],
                                env=env, capture_output=True, text=True)
            r1 = time.perf_counter()
            loader.join()
        finally:
            stop(proc)
        if rb.returncode != 0:
            print(f"rollback failed: {rb.stderr}")
            return 1
        res = sorted(results)
        failed = [r for r in res if r[2] != 200]
        lat = np.asarray([r[1] - r[0] for r in res]) * 1e3
        first_old = next((r for r in res if r[0] >= r0 and r[3] == "1.1.0"), None)
        after_new = [r for r in res if r[0] > r1 and r[3] == "1.2.0"]
        span = res[-1][1] - res[0][0]
        print(f"rollback under load: {len(res)} requests at {args.rate:.0f}/s offered "
              f"({len(res) / span:.0f}/s achieved) to a real edgeship-agent, 4x{args.dim} MLP")
        print(f"  failed requests            {len(failed)} (target 0)")
        switch_s = json.loads(rb.stdout)["switch_s"]
        print(f"  switch in the agent        {switch_s:.3f} s (load release 1, swap, drain release 2; target < 1 s)")
        print(f"  `edgeship-agent rollback`  {r1 - r0:.3f} s wall, CLI process start included")
        if first_old:
            print(f"  rollback start -> first answer from release 1: {first_old[1] - r0:.3f} s")
        print(f"  answers from release 2 sent after the rollback returned: {len(after_new)} (target 0)")
        print(f"  latency p50 {np.percentile(lat, 50):.2f} ms  p99 {np.percentile(lat, 99):.2f} ms  "
              f"max {lat.max():.2f} ms")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
