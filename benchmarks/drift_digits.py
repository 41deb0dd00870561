"""On-device drift detection on the digits CNN (issue 12 figure).

The digits model is compiled (``ref:digits``, or ``--build DIR`` of an earlier compile) and
packaged: the bundle carries the drift baseline of its 450 held-out validation images. A
real in-process Agent serves it with the device's DriftMonitor attached ([drift] defaults:
a check every 100 requests over a window of the last 5 checks, an alarm after 3 checks in a
row over a threshold). The monitor's checks are run on the request schedule (every 100
requests) rather than by its thread, so request counts are exact.

1. false alarms: 10,000 requests of images drawn at random from the validation data
   (target: 0 alarms);
2. detection: after 1,000 validation requests, traffic switches to a real shift: images
   shifted by 2 pixels, rotated 90 degrees, inverted, or a class mix of only digits 0-2;
   requests from the switch to the first alarm (target <= 500 each);
3. cost per request: drift observer + the amortized checks, against the p50 of
   ``Agent.infer``, timed side by side in blocks of 100 requests (target < 2%).

Usage: ``python benchmarks/drift_digits.py [--build BUILD_DIR/digits] [--requests 10000]``. Exit 1 on a miss.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DETECT_WITHIN = 500
COST_TARGET = 0.02


def _build(work: Path, build: str | None) -> Path:
    if build:
        return Path(build)
    from runtime.spec import Engine
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision
    from toolchain.console import Progress

    p = Progress()
    res = compile_model(CompileOptions(source="ref:digits", out_dir=work / "build", precisions=(Precision.FP32,),
                                       targets=(Engine.ONNXRUNTIME,)), progress=p, warn=p.warn)
    return res.build_dir


def _agent(work: Path, build: Path):
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.store import Store
    from toolchain.package import package_build

    res = package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=work / "bundles")
    store = Store(work / "state")
    store.activate(store.install_bundle(res.path).sha256)
    return Agent(AgentConfig.for_state_dir(work / "state", engine_threads=1)), res.info


class Run:
    """An agent + a drift monitor checked every ``check_every`` requests; records alarms."""

    def __init__(self, agent, cfg) -> None:
        from device_agent.monitoring.drift import DriftMonitor

        self.agent, self.cfg = agent, cfg
        self.monitor = DriftMonitor(agent, self.cfg)  # not started: checks on the request schedule
        self.alarms: list[tuple[int, object]] = []
        self.n = 0
        self.check_s = 0.0
        self.monitor.add_listener(lambda r, changes: self.alarms.extend(
            (self.n, c) for c in changes if c.transition.value == "raised"))
        agent.add_tensor_observer(self.monitor.observe)

    def feed(self, images: np.ndarray) -> None:
        for img in images:
            self.agent.infer({"image": img[None]})
            self.n += 1
            if self.n % self.cfg.check_every_requests == 0:
                t0 = time.perf_counter()
                self.monitor.check()
                self.check_s += time.perf_counter() - t0

    def close(self) -> None:
        self.agent.remove_tensor_observer(self.monitor.observe)


def _shifts(x: np.ndarray, y: np.ndarray, rng) -> dict[str, np.ndarray]:
    bg = x.min()
    shifted = np.full_like(x, bg)
    shifted[..., :, 2:] = x[..., :, :-2]
    return {"shifted 2 px": shifted, "rotated 90 deg": np.rot90(x, 1, axes=(2, 3)).copy(),
            "inverted": (-x).copy(), "class mix 0-2 only": x[y <= 2]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", help="a digits build dir (edgeship compile ref:digits); default: compile one")
    ap.add_argument("--requests", type=int, default=10_000)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgeship-bench-drift-"))
    import logging

    logging.getLogger("edgeship").setLevel(logging.ERROR)  # the alarms are counted, not printed
    ok = True
    try:
        build = _build(work, args.build)
        agent, info = _agent(work, build)
        with np.load(build / "data" / "validation.npz") as z:
            x, y = z["image"], z["__labels__"]
        rng = np.random.default_rng(0)
        print(f"drift on the digits CNN (ONNX Runtime fp32, 1 thread): baseline of {info.drift.samples} validation "
              f"images; thresholds PSI {info.drift.thresholds.psi}, out of range {info.drift.thresholds.out_of_range_share}, "
              f"NaN/Inf {info.drift.thresholds.nonfinite_share}; check every 100 requests, window 5 checks, sustain 3")
        from device_agent.monitoring.drift import DriftSection

        for label, cfg in (("every request sketched ([drift] defaults)", DriftSection()),
                           ("1 request in 4 sketched (sample_every_requests = 4, min_samples = 50)",
                            DriftSection(sample_every_requests=4, min_samples=50))):
            print(f"{label}:")
            ok &= _false_alarms(agent, cfg, x, rng, args.requests)
            ok &= _detection(agent, cfg, x, y, rng)
            ok &= _cost(agent, cfg, x, rng)
        agent.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _false_alarms(agent, cfg, x, rng, n: int) -> bool:
    run = Run(agent, cfg)
    run.feed(x[rng.integers(0, len(x), n)])
    run.close()
    worst = max((s.psi for s in run.monitor.latest.scores), default=0.0)
    print(f"  validation traffic   {n} requests, {run.monitor.latest.checks} checks: {len(run.alarms)} alarm(s) "
          f"(last window's highest PSI {worst:.3f})")
    if run.alarms:
        print(f"FAIL false alarms: {len(run.alarms)} ({[c.reason_code + ' ' + c.name for _, c in run.alarms][:5]})")
        return False
    print("PASS false alarms: 0")
    return True


def _detection(agent, cfg, x, y, rng) -> bool:
    ok = True
    for name, shifted in _shifts(x, y, rng).items():
        run = Run(agent, cfg)
        run.feed(x[rng.integers(0, len(x), 1000)])
        before = len(run.alarms)
        start = run.n
        run.feed(shifted[rng.integers(0, len(shifted), 2000)])
        run.close()
        after = [(n - start, c) for n, c in run.alarms[before:]]
        if before:
            print(f"FAIL {name}: {before} alarm(s) during the 1,000 validation requests before the shift")
            ok = False
        if not after:
            print(f"FAIL {name}: no alarm within 2,000 shifted requests")
            ok = False
            continue
        first, c = after[0]
        verdict = "PASS" if first <= DETECT_WITHIN else "FAIL"
        ok &= verdict == "PASS"
        print(f"{verdict} {name}: first alarm after {first} shifted requests ({c.reason_code} on {c.kind} {c.name!r}, "
              f"{c.value:.3f} > {c.threshold:g}; target <= {DETECT_WITHIN})")
    return ok


def _cost(agent, cfg, x, rng, n: int = 3000) -> bool:
    """Per-request cost of drift against Agent.infer, side by side: for each block of
    ``check_every_requests`` requests, time the plain inferences, then the observer on their
    real feeds/outputs (what the request thread pays), then the check (what the checker thread
    pays); the figures are medians over blocks, so a load change hits all three alike."""
    from device_agent.monitoring.drift import DriftMonitor

    imgs = x[rng.integers(0, len(x), n)]
    feeds = [{"image": im[None]} for im in imgs]
    monitor = DriftMonitor(agent, cfg)
    sha = agent.current().ref.sha256
    k = cfg.check_every_requests
    infer_s, obs_s, chk_s, p50s = [], [], [], []
    for start in range(0, n - k + 1, k):
        block = feeds[start:start + k]
        outs, lat = [], []
        for f in block:
            t0 = time.perf_counter()
            outs.append(agent.infer(f))
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for f, o in zip(block, outs):
            monitor.observe(sha, f, o)
        t1 = time.perf_counter()
        monitor.check()
        t2 = time.perf_counter()
        p50s.append(float(np.median(lat)))
        obs_s.append((t1 - t0) / k)
        chk_s.append((t2 - t1) / k)
    p50, observe_s, check_s = float(np.median(p50s)), float(np.median(obs_s)), float(np.median(chk_s))
    ratio = (observe_s + check_s) / p50
    print(f"  cost per request     request thread (observer) {observe_s * 1e6:.2f} us = {observe_s / p50 * 100:.2f}%; "
          f"checker thread {check_s * 1e6:.2f} us ({check_s * k * 1e6:.0f} us per check of {k}); total {(observe_s + check_s) * 1e6:.2f} us vs Agent.infer p50 "
          f"{p50 * 1e6:.1f} us: {ratio * 100:.2f}% (target < {COST_TARGET * 100:.0f}%; medians of "
          f"{len(p50s)} blocks of {k} requests, each timed side by side)")
    verdict = "PASS" if ratio < COST_TARGET else "FAIL"
    print(f"{verdict} cost: {ratio * 100:.2f}% of p50 inference (request thread alone "
          f"{observe_s / p50 * 100:.2f}%)")
    return verdict == "PASS"


if __name__ == "__main__":
    sys.exit(main())
