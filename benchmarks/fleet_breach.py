"""Time from a breach in a wave to the rollout's pause, over 1,000 simulated devices.

Each round rolls a new release out in waves of 50 and the rest; 40% of the devices' gates
refuse it. The breach is the moment the wave's results first reach the plan's rule (at
least 10 results, failures >= 20%), taken from the arrival times of the devices' deploy
results at a passive subscriber; the pause is the arrival of the controller's retained
``paused`` state at the same subscriber. Both clocks are the subscriber's, so the figure
is what an operator would see: the devices' reports -> the controller -> the broker.

Also printed (informative, no goal): a latency regression (p95 x2 on the new release with
perfect install health) from the first metrics window of the new release to the pause, i.e.
how long the sequential test needs with a 10-device wave and 1 s windows.

Verdicts by the shared rules (benchmarks/_verdict.py; the delay is a load-"up" figure); a round
where no breach or no pause was seen FAILs. Exit 1 on a miss, 3 when inconclusive, else 0.

Run: PYTHONPATH=. python benchmarks/fleet_breach.py [--devices 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet_setup import Counting, fleet_env, run_rollout, start_sim  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

PAUSE = Target("install breach in a wave -> rollout paused", "<", 2.0, "s", load="up")
UNSEEN = Target("rounds where no breach or no pause was seen", "<=", 0, "", ".0f", load="none")
MIN_SAMPLE, MAX_FAILURE_PCT = 10, 20.0


def breach_time(events, dep: str) -> float | None:
    """When the results of ``dep`` first met the pause rule (subscriber clock)."""
    done = failed = 0
    for t, _device, doc in sorted(events, key=lambda e: e[0]):
        if doc.get("deployment_id") != dep:
            continue
        done += 1
        failed += doc["state"] != "commit"
        if done >= MIN_SAMPLE and 100.0 * failed / done >= MAX_FAILURE_PCT:
            return t
    return None


def verdicts(*, lat: list[float], model_lat: list[float], unseen: int, load: Load | None,
             title: str = "") -> Report:
    """The verdict rows (pure): ``lat`` one breach -> pause delay per round that saw both."""
    report = Report(title)
    report.judge(UNSEEN, unseen, exact=True)
    report.judge(PAUSE, lat, load=load)
    if model_lat:
        report.info("latency x2 (perfect installs): first window -> paused", model_lat, unit="s", load=load,
                    note="informative: the sequential test's minimum exposure, 10 devices, 1 s windows")
    return report


def main(argv=None) -> int:
    from toolchain.fleet.sim.behaviour import SimBehaviour

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    lat, model_lat, unseen = [], [], 0
    beh = SimBehaviour(seed=2, metrics_interval_s=1.0, install_s=0.6, requests_per_s=20.0, heartbeat_s=60.0)
    for r in range(args.rounds):
        beh = beh.with_release(2 + r, gate_fail_share=0.4)
    beh = beh.with_release(50, latency_factor=2.0)
    with LoadMonitor() as mon, fleet_env() as env:
        sim = start_sim(env, args.devices, beh)
        counter = Counting(env["broker"].port)
        try:
            for r in range(args.rounds):
                release, rid = 2 + r, f"breach-r{2 + r}"
                end, secs, _ = run_rollout(env, {
                    "id": rid, "release": release, "concurrency": 50, "target": {"group": "sim"},
                    "criteria": {"bake_s": 5.0, "min_sample": MIN_SAMPLE, "max_failure_pct": MAX_FAILURE_PCT,
                                 "install_timeout_s": 60.0},
                    "wave": [{"size": 50}, {"size": "rest"}]}, stop_when=lambda st: st.status.value == "paused")
                t_breach, t_pause = breach_time(counter.events, rid), counter.first.get(f"{rid}:paused")
                if t_breach is None or t_pause is None:
                    print(f"round {r + 1}: no breach/pause seen ({end.status.value}: {end.reason})")
                    unseen += 1
                    continue
                lat.append(t_pause - t_breach)
                print(f"round {r + 1}: {end.reason}; breach -> paused {t_pause - t_breach:.3f} s", flush=True)
            rid = "latency-r50"
            end, secs, _ = run_rollout(env, {
                "id": rid, "release": 50, "concurrency": 50, "target": {"group": "sim"},
                "criteria": {"bake_s": 30.0, "min_requests": 500, "min_device_s": 20.0, "min_windows": 10,
                             "install_timeout_s": 60.0},
                "wave": [{"size": 10}, {"size": "rest"}]}, stop_when=lambda st: st.status.value == "paused")
            t_first, t_pause = counter.first.get("metrics:r50"), counter.first.get(f"{rid}:paused")
            if t_first and t_pause:
                model_lat.append(t_pause - t_first)
                print(f"latency regression: {end.reason}; first window of r50 -> paused {t_pause - t_first:.2f} s")
        finally:
            counter.close()
            sim.stop()
    report = verdicts(lat=lat, model_lat=model_lat, unseen=unseen, load=mon.load(),
                      title=f"\nbreach-to-pause figures: {args.devices} simulated devices, waves of 50 + rest, pause at "
                            f">= {MAX_FAILURE_PCT:g}% failures of >= {MIN_SAMPLE} results, {args.rounds} round(s)")
    report.print()
    return report.exit_code()

if __name__ == "__main__":
    sys.exit(main())
