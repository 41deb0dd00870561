"""`edgeship fleet status` over 1,000 simulated devices against one local mosquitto.

Runs the real command (`python -m toolchain.cli fleet status --fleet F --json`, a new
process each time, so the figure includes interpreter start and imports) while the devices
keep sending their metrics windows; each run reads every device's retained status,
reported and desired documents and prints one row per device. The command waits 0.5 s
without a new message before it answers (its settle time), which is part of the figure.

Verdicts by the shared rules (benchmarks/_verdict.py; the time is a load-"up" figure); a run
that did not list every device FAILs. Exit 1 on a miss, 3 when inconclusive, else 0.

Run: PYTHONPATH=. python benchmarks/fleet_status.py [--devices 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet_setup import fleet_env, start_sim  # noqa: E402
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

STATUS = Target("`edgeship fleet status --json` over the fleet", "<", 2.0, "s", load="up")
SHORT = Target("runs that did not list every device", "<=", 0, "", ".0f", load="none")


def verdicts(*, times: list[float], table_s: list[float], short: int, load: Load | None, title: str = "") -> Report:
    """The verdict rows (pure): ``times`` one per --json run, ``short`` runs that missed devices."""
    report = Report(title)
    report.judge(SHORT, short, exact=True)
    report.judge(STATUS, times, load=load)
    report.info("the table instead of --json (one run)", table_s, unit="s", load=load)
    return report


def main(argv=None) -> int:
    from toolchain.fleet.sim.behaviour import SimBehaviour

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    times, table, short = [], [], 0
    root = Path(__file__).resolve().parents[1]
    env_vars = dict(os.environ, PYTHONPATH=str(root))
    with LoadMonitor() as mon, fleet_env() as env:
        sim = start_sim(env, args.devices, SimBehaviour(seed=3, metrics_interval_s=2.0))
        cmd = [sys.executable, "-m", "toolchain.cli", "fleet", "status", "--fleet", "bench",
               "--broker", f"127.0.0.1:{env['broker'].port}"]
        try:
            for r in range(args.rounds):
                t0 = time.monotonic()
                p = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env_vars, timeout=60)
                times.append(time.monotonic() - t0)
                rows = json.loads(p.stdout) if p.returncode == 0 else []
                print(f"round {r + 1}: {len(rows)} rows in {times[-1]:.2f} s (exit {p.returncode})", flush=True)
                if len(rows) != args.devices:
                    short += 1
                    print(f"  expected {args.devices} rows: {p.stderr[-500:]}")
            t0 = time.monotonic()
            p = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, timeout=60)
            table.append(time.monotonic() - t0)
            print(f"table: {len(p.stdout.splitlines()) - 2} rows in {table[0]:.2f} s", flush=True)
        finally:
            sim.stop()
    report = verdicts(times=times, table_s=table, short=short, load=mon.load(),
                      title=f"\nfleet status figures: {args.devices} simulated devices sending metrics every 2 s, "
                            f"{len(times)} run(s)")
    report.print()
    return report.exit_code()

if __name__ == "__main__":
    sys.exit(main())
