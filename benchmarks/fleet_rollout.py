"""A 3-wave rollout over 1,000 simulated devices, end to end, against one local mosquitto.

Waves 1% / 10% / the rest, 10 s bake each (30 s of bake in all), 250 devices updating at
once, model health judged against the control cohort in every wave; the controller runs in
this process, the simulator too (4 MQTT connections), the broker in its own. Rounds: one
rollout each (releases 2, 3, 4 of the same fleet, back to back).

Prints, per the issue's goals:
  end to end (controller start -> completed)      target < 60 s with 10 s bakes
  controller's own time (end to end - 3 bakes)    (informative)
  broker messages per device per rollout          target <= 15, metrics windows excluded
                                                  (they flow with or without a rollout; shown apart)

Verdicts by the shared rules (benchmarks/_verdict.py): the durations are load-"up" figures (a
PASS under load stands), messages per device cannot be changed by load; a round whose rollout
did not complete FAILs. Exit 1 on a miss, 3 when a figure is inconclusive, else 0.

Run: PYTHONPATH=. python benchmarks/fleet_rollout.py [--devices 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet_setup import Counting, fleet_env, run_rollout, start_sim  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

BAKE_S = 10.0
E2E = Target("3-wave rollout, end to end (10 s bakes)", "<", 60.0, "s", load="up")
MSGS = Target("broker messages per device per rollout (no metrics)", "<=", 15.0, "msg", load="none")
INCOMPLETE = Target("rollouts that did not complete", "<=", 0, "", ".0f", load="none")


def verdicts(*, e2e: list[float], overhead: list[float], per_device: list[float],
             metrics_per_device: list[float], incomplete: int, load: Load | None, title: str = "") -> Report:
    """The verdict rows (pure): one value per round in each list."""
    report = Report(title)
    report.judge(INCOMPLETE, incomplete, exact=True)
    report.judge(E2E, e2e, load=load)
    report.info("installs + controller beyond the 3 bakes", overhead, unit="s", load=load)
    report.judge(MSGS, per_device, load=load)
    report.info("metrics windows per device during the rollout", metrics_per_device, unit="msg",
                note="every 2 s, rollout or not")
    return report


def main(argv=None) -> int:
    from toolchain.fleet.sim.behaviour import SimBehaviour

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    e2e, overhead, per_device, metrics_per_device = [], [], [], []
    incomplete = 0
    with LoadMonitor() as mon, fleet_env() as env:
        t0 = time.monotonic()
        sim = start_sim(env, args.devices, SimBehaviour(seed=1, metrics_interval_s=2.0, install_s=0.6,
                                                        requests_per_s=20.0, heartbeat_s=60.0))
        print(f"{args.devices} simulated devices up in {time.monotonic() - t0:.1f} s "
              f"({len(sim.conns)} connections); broker on 127.0.0.1:{env['broker'].port}", flush=True)
        counter = Counting(env["broker"].port)
        try:
            for r in range(args.rounds):
                release = 2 + r
                counter.by_kind.clear()
                counter.enabled = True
                end, secs, ctl = run_rollout(env, {
                    "id": f"bench-r{release}", "release": release, "concurrency": 250, "target": {"group": "sim"},
                    "criteria": {"bake_s": BAKE_S, "min_requests": 1000, "min_device_s": 60.0, "min_windows": 10,
                                 "install_timeout_s": 120.0},
                    "wave": [{"size": "1%"}, {"size": "10%"}, {"size": "rest"}]})
                counter.enabled = False
                kinds = dict(counter.by_kind)
                rollout_msgs = sum(v for k, v in kinds.items() if k != "telemetry/metrics")
                on = sum(d.release == release for d in sim.devices.values())
                waves = ", ".join(f"wave {i + 1}: {len(w)} installed in "
                                  f"{(end.settled_ms.get(i, 0) - end.started_ms.get(i, 0)) / 1000:.1f} s"
                                  for i, w in enumerate(end.waves))
                print(f"round {r + 1}: release {release}: {end.status.value} in {secs:.1f} s, {on}/{args.devices} "
                      f"devices on it ({waves}); messages {kinds}; controller published {ctl.published}", flush=True)
                if end.status.value != "completed":
                    print(f"  the rollout did not complete: {end.reason}", flush=True)
                    incomplete += 1
                e2e.append(secs)
                overhead.append(secs - BAKE_S * len(end.waves))
                per_device.append(rollout_msgs / args.devices)
                metrics_per_device.append(kinds.get("telemetry/metrics", 0) / args.devices)
        finally:
            counter.close()
            sim.stop()
    report = verdicts(e2e=e2e, overhead=overhead, per_device=per_device, metrics_per_device=metrics_per_device,
                      incomplete=incomplete, load=mon.load(),
                      title=f"\nfleet rollout figures: {args.devices} simulated devices, 3 waves (1%/10%/rest), "
                            f"{BAKE_S:g} s bakes, {args.rounds} round(s)")
    report.print()
    return report.exit_code()

if __name__ == "__main__":
    sys.exit(main())
