"""Rollback under a steady local load: zero failed requests, the switch done in < 1 s.

A real ``edgeship-agent run`` serves release 2 of a model (release 1 is the previous one).
An open-loop load generator (``_load.OpenLoop``) sends POST /v2/models/{m}/infer at a fixed
rate (default 200 requests/s): request ``i`` is due at ``t0 + i/rate`` and its latency counts
from that scheduled time, so a stall shows up as latency rather than as a lower rate (the
achieved rate is printed next to the offered one). Midway, ``edgeship-agent rollback`` is run
as a user would run it. Repeated ``--runs`` times (a fresh agent each); the verdicts
(``TARGETS``) use every run.

Usage: ``python benchmarks/agent_rollback_under_load.py [--rate 200] [--seconds 6] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _agent_rig import ROOT, active_store, free_port, make_bundle, spawn_agent, stop, wait_ready, write_config  # noqa: E402
from _load import OpenLoop, describe  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

TARGETS = {
    "failed": Target("failed requests (all runs)", "<=", 0, fmt=".0f", load="none"),
    "stale": Target("release-2 answers sent after rollback returned", "<=", 0, fmt=".0f", load="none"),
    "switch_s": Target("switch in the agent (load 1, swap, drain 2)", "<", 1.0, "s", fmt=".3f", load="up"),
    "worst_latency_s": Target("worst request latency from its schedule", "<", 1.0, "s", fmt=".3f", load="up"),
}


def verdicts(runs: list[dict], *, load: Load | None) -> Report:
    """Verdict rows from per-run figures (pure; tests feed synthetic numbers)."""
    rep = Report()
    rep.judge(TARGETS["failed"], sum(r["failed"] for r in runs) if runs else [], exact=True, load=load)
    rep.judge(TARGETS["stale"], sum(r["stale"] for r in runs) if runs else [], exact=True, load=load)
    rep.judge(TARGETS["switch_s"], [r["switch_s"] for r in runs], load=load)
    rep.judge(TARGETS["worst_latency_s"], [r["worst_latency_s"] for r in runs], load=load)
    for key, name, unit, fmt, scale in (
            ("rollback_wall_s", "`edgeship-agent rollback` wall (CLI start incl.)", "s", ".3f", 1),
            ("first_old_s", "rollback start -> first answer from release 1", "s", ".3f", 1),
            ("p99_latency_s", "p99 request latency from its schedule", "ms", ".2f", 1e3),
            ("achieved_per_s", "achieved request rate", "/s", ".0f", 1)):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            rep.info(name, vals, unit=unit, fmt=fmt, scale=scale, load=load)
    return rep


def _http_call(port: int, body: bytes):
    import http.client

    def make():
        holder = {"conn": http.client.HTTPConnection("127.0.0.1", port, timeout=10)}

        def call():
            conn = holder["conn"]
            try:
                conn.request("POST", "/v2/models/mlp/infer", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
            except Exception:
                conn.close()  # a dropped connection: reconnect for the next request
                holder["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                raise
            if r.status != 200:
                return f"http {r.status}", None
            return "ok", json.loads(data)["model_version"]
        return call
    return make


def one_run(tmp: Path, args) -> dict:
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
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with OpenLoop(_http_call(port, body), rate=args.rate, workers=args.workers,
                      duration_s=args.seconds, start_delay_s=0.2) as load:
            time.sleep(0.2 + args.seconds / 2)
            r0 = time.perf_counter()
            rb = subprocess.run([sys.executable, "-m", "device_agent.cli", "rollback", "--config", str(cfg), "--json"],
                                env=env, capture_output=True, text=True)
            r1 = time.perf_counter()
            load.wait()
    finally:
        stop(proc)
    if rb.returncode != 0:
        raise SystemExit(f"rollback failed (exit {rb.returncode}): {rb.stderr}")
    res = sorted(load.results, key=lambda r: r.index)
    summ = load.summary()
    first_old = next((r for r in res if r.sent >= r0 and r.detail == "1.1.0"), None)
    print(f"  run: {describe(summ)}", flush=True)
    for e in summ["errors"]:
        print(f"    error: {e}")
    return {"failed": sum(r.outcome != "ok" for r in res),
            "stale": sum(1 for r in res if r.sent > r1 and r.detail == "1.2.0"),
            "switch_s": json.loads(rb.stdout)["switch_s"], "rollback_wall_s": r1 - r0,
            "first_old_s": (first_old.done - r0) if first_old else None,
            "worst_latency_s": summ["latency_ms"]["max"] / 1e3, "p99_latency_s": summ["latency_ms"]["p99"] / 1e3,
            "achieved_per_s": summ["achieved_per_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"rollback under load: open loop at {args.rate:.0f} req/s offered for {args.seconds:g} s to a real "
          f"edgeship-agent (4x{args.dim} MLP), rollback midway, {args.runs} runs")
    runs = []
    with LoadMonitor() as mon:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as td:
                runs.append(one_run(Path(td), args))
    rep = verdicts(runs, load=mon.load())
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
