"""Agent footprint: idle resident memory and start -> ready time (issue 4 figures).

Spawns a real ``edgeship-agent run`` (ONNX Runtime, a small model loaded) and polls
``/v2/health/ready`` every 5 ms from the moment of spawn; after a few requests and 1 s of
idle it reads the process's RSS (and USS, memory unique to it) with psutil. Side by side, a
bare ``python -c "import onnxruntime; InferenceSession(model)"`` is measured the same way,
so the agent's own share is visible. Targets (``TARGETS``): RSS <= 120 MB, ready < 1.5 s, judged
over the runs (median and spread; see ``_verdict``); a bare process measured above the agent
that contains it refuses a verdict.

Usage: ``python benchmarks/agent_memory_startup.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _agent_rig import active_store, free_port, make_bundle, spawn_agent, stop, wait_ready, write_config  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target, baseline_exceeds_bound  # noqa: E402

TARGETS = {
    "ready_s": Target("start -> /v2/health/ready", "<", 1.5, "s", fmt=".3f", load="up"),
    "rss_mb": Target("idle RSS", "<=", 120.0, "MB", fmt=".1f", load="none"),
}

HEAVY = ("torch", "onnx", "openvino", "tensorflow", "toolchain", "litert_torch")


def _mem(pid: int) -> tuple[float, float]:
    import psutil

    p = psutil.Process(pid)
    info = p.memory_full_info()
    return info.rss / 1e6, info.uss / 1e6  # MB (10^6 bytes), the unit of the 120 MB target


def _bare_ort(model: Path) -> tuple[float, float, float]:
    code = ("import sys, time; t0 = time.perf_counter(); import onnxruntime as ort, numpy as np; "
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); "
            "s.run(None, {'x': np.zeros((1, 64), np.float32)}); print(time.perf_counter() - t0, flush=True); "
            "sys.stdin.readline()")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, str(model)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    p.stdout.readline()
    ready = time.perf_counter() - t0
    time.sleep(1.0)
    rss, uss = _mem(p.pid)
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(timeout=10)
    return ready, rss, uss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--full", action="store_true",
                    help="also configure [update] (a local repository) and [mqtt] (a broker that is "
                         "not there), as a fully featured device runs")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        res = make_bundle(tmp, release=1, name="small", dim=64, layers=3)
        state = tmp / "state"
        store, ref = active_store(state, res.path)
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                       "data": np.zeros(64).tolist()}]}).encode()
        runs: list[dict] = []
        mods = None
        with LoadMonitor() as mon:
            for _ in range(args.runs):
                mods = _one_run(args, tmp, state, store.model_path(ref.sha256), body, runs)
    extra = " with [update] and [mqtt] on" if args.full else ""
    print(f"edgeship-agent run{extra}, ONNX Runtime, 3x64 MLP loaded, {args.runs} runs; "
          "beside it a bare python + onnxruntime session of the same model, measured alike")
    if mods is not None:
        heavy = sorted(m for m in mods if m in HEAVY)
        print(f"heavy modules in the agent: {heavy or 'none'}")
    rep = verdicts(runs, load=mon.load())
    rep.print()
    return rep.exit_code()


def _one_run(args, tmp: Path, state: Path, model: Path, body: bytes, runs: list[dict]) -> set[str] | None:
    """Start the agent, wait for ready, send 20 requests, idle 1 s, read its memory; then the bare
    process alike. Appends the figures to ``runs``; returns the agent's mapped packages."""
    port = free_port()
    cfg = write_config(tmp / "agent.toml", state, port)
    if args.full:
        _add_extensions(cfg, state, tmp)
    t0 = time.perf_counter()
    proc = spawn_agent(cfg)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        ready_s = time.perf_counter() - t0
        for _ in range(20):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/small/infer", data=body,
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req).read()
        time.sleep(1.0)
        rss, uss = _mem(proc.pid)
        mods = _loaded_modules(proc.pid)
    finally:
        stop(proc)
    b_ready, b_rss, b_uss = _bare_ort(model)
    runs.append({"ready_s": ready_s, "rss_mb": rss, "uss_mb": uss, "bare_ready_s": b_ready,
                 "bare_rss_mb": b_rss, "bare_uss_mb": b_uss})
    return mods


def verdicts(runs: list[dict], *, load: Load | None) -> Report:
    """Verdict rows from per-run figures (pure; tests feed synthetic numbers)."""
    rep = Report()
    if not runs:
        for t in TARGETS.values():
            rep.judge(t, [])
        return rep
    col = {k: [r[k] for r in runs] for k in runs[0]}
    med = {k: float(np.median(v)) for k, v in col.items()}
    rep.judge(TARGETS["ready_s"], col["ready_s"], load=load,
              refuse=[baseline_exceeds_bound(med["bare_ready_s"], med["ready_s"], tolerance=0.05,
                                             what="bare onnxruntime start-up")])
    rep.judge(TARGETS["rss_mb"], col["rss_mb"], load=load,
              refuse=[baseline_exceeds_bound(med["bare_rss_mb"], med["rss_mb"], what="bare onnxruntime RSS")])
    rep.info("idle USS", col["uss_mb"], unit="MB", fmt=".1f", load=load)
    rep.info("bare onnxruntime: start -> first result", col["bare_ready_s"], unit="s", fmt=".3f", load=load)
    rep.info("bare onnxruntime: idle RSS", col["bare_rss_mb"], unit="MB", fmt=".1f", load=load)
    rep.info("agent's own share of RSS", [a - b for a, b in zip(col["rss_mb"], col["bare_rss_mb"])],
             unit="MB", fmt=".1f", load=load)
    return rep


def _add_extensions(cfg: Path, state: Path, tmp: Path) -> None:
    """Turn on OTA updates (a local repository, polled every 60 s) and MQTT (port 1: no broker)."""
    trust = state / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    (trust / "root.json").write_text(json.dumps({"signed": {"_type": "root"}, "signatures": []}))
    (tmp / "repo").mkdir(exist_ok=True)
    cfg.write_text(cfg.read_text() + f'\n[update]\nrepository_url = "{tmp / "repo"}"\npoll_interval_s = 60.0\n'
                   '\n[mqtt]\nhost = "127.0.0.1"\nport = 1\n')


def _loaded_modules(pid: int) -> set[str] | None:
    """Top-level Python packages mapped into the process (from its shared objects / files)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    out = set()
    for line in maps.splitlines():
        if "site-packages/" in line:
            out.add(line.split("site-packages/")[1].split("/")[0])
    return out


if __name__ == "__main__":
    sys.exit(main())
