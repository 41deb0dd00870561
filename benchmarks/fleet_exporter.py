"""`edgeship fleet exporter` with 1,000 devices (issue 12 figure): scrape time and RSS.

The devices are the fleet simulator's (``toolchain.fleet.sim.SimFleet``, what `edgeship fleet
simulate --devices N` runs): retained status and reported state, a ``telemetry/metrics`` window
every 2 s per device, built by the contracts' code. The simulator runs its default behaviour
(no drift baseline), so each device also gets a retained ``telemetry/drift`` document from
``toolchain.fleet.synthetic`` (real payloads through the contract's builder). A real ``edgeship fleet exporter`` process subscribes
through a local mosquitto; once it tracks every device, ``/metrics`` is scraped ``--scrapes``
times while the simulator keeps publishing.

Targets, judged by the shared rules (``_verdict.py``): scrape p95 < 500 ms (Prometheus' default
scrape timeout is 10 s) on the 95% order-statistic interval of the p95 of ``--scrapes`` scrapes
(80: fewer give no interval, "inconclusive"); exporter peak RSS (sampled after every scrape)
< 200 MB; no malformed message counted (the simulator sends well-formed telemetry only, a count
is the exporter's bug) and every device tracked within 120 s (exact).
Usage: ``python benchmarks/fleet_exporter.py [--devices 1000] [--rounds 3] [--scrapes 80]``.
Exit 0 when every target is met, 1 on a miss, 3 when a figure is inconclusive.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _verdict import Load, LoadMonitor, Report, Target  # noqa: E402

SCRAPE = Target("exporter /metrics scrape p95 during live telemetry", "<", 0.5, "ms", ".4g", 1e3, load="up")
RSS = Target("exporter peak RSS while scraped", "<", 200.0, "MB", ".4g", load="none")
MALFORMED = Target("malformed messages counted by the exporter", "<=", 0, "", ".0f", load="none")
UNTRACKED = Target("devices not tracked within 120 s", "<=", 0, "", ".0f", load="none")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _scrape(port: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        body = r.read().decode()
    return time.perf_counter() - t0, body


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="metrics windows per device before measuring")
    ap.add_argument("--scrapes", type=int, default=80)
    args = ap.parse_args(argv)

    from toolchain.fleet.localbroker import Broker, free_port

    work = Path(tempfile.mkdtemp(prefix="edgeship-bench-exporter-"))
    broker = Broker(str(work / "broker")).start()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "fleet", "exporter", "--broker",
                             f"127.0.0.1:{broker.port}", "--port", str(port), "--stale-after-s", "600"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sim = drift = None
    times, rss, started, rss_idle, series, size, metrics_seen, malformed, untracked = [], [], 0.0, 0.0, 0, 0, 0.0, 0.0, 0
    try:
        with LoadMonitor() as mon:
            proc.stdout.readline()  # "edgeship fleet exporter: http://..." once it serves
            rss_idle = _rss_mb(proc.pid)
            t0 = time.perf_counter()
            sim, drift = _start_fleet(work, broker.port, args.devices)
            started = time.perf_counter() - t0
            deadline = time.monotonic() + 120
            want = float(args.devices * args.rounds)
            tracked = 0.0
            while time.monotonic() < deadline:
                _, text = _scrape(port)
                got = _sample(text, 'edgeship_fleet_exporter_messages_total{kind="metrics"}') or 0.0
                tracked = _sample(text, "edgeship_fleet_exporter_devices") or 0.0
                if tracked == args.devices and got >= want:
                    break
                time.sleep(0.5)
            else:
                untracked = max(1, args.devices - int(tracked))
            if not untracked:
                for _ in range(args.scrapes):  # the simulator keeps publishing its windows meanwhile
                    dt, text = _scrape(port)
                    times.append(dt)
                    rss.append(_rss_mb(proc.pid))
                    size = len(text)
                    time.sleep(0.2)
                series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
                metrics_seen = _sample(text, 'edgeship_fleet_exporter_messages_total{kind="metrics"}') or 0.0
                malformed = sum(float(ln.split()[-1]) for ln in text.splitlines()
                                if ln.startswith("edgeship_fleet_exporter_malformed_total{"))
    finally:
        if drift is not None:
            drift.close()
        if sim is not None:
            sim.stop()
        proc.terminate()
        proc.wait(10)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    title = (f"edgeship fleet exporter, {args.devices} devices of the fleet simulator (metrics every 2 s; started in "
             f"{started:.1f} s) + a retained drift document each; {args.scrapes} scrapes during live telemetry "
             f"({series} series, {size / 1e6:.2f} MB a scrape; {metrics_seen:.0f} metrics windows read)")
    report = verdicts(scrape_s=times, rss_mb=rss, rss_idle_mb=rss_idle, malformed=malformed, untracked=untracked,
                      load=mon.load(), title=title)
    report.print()
    return report.exit_code()


def verdicts(*, scrape_s: list[float], rss_mb: list[float], rss_idle_mb: float, malformed: float, untracked: int,
             load: Load | None, title: str = "") -> Report:
    """The verdict rows (pure): every scrape's time (s), the RSS after each (MB), the malformed
    messages the exporter counted, the devices it did not track in time."""
    from runtime.bench.stats import quantile_ci

    report = Report(title)
    report.judge(UNTRACKED, untracked, exact=True)
    report.judge(MALFORMED, malformed, exact=True)
    t = np.sort(np.asarray(scrape_s, dtype=float))
    if t.size:
        report.judge(SCRAPE, float(np.percentile(t, 95)), interval=quantile_ci(t, 95), load=load,
                     note=f"{t.size} scrapes, p50 {np.percentile(t, 50) * 1e3:.1f} ms, max {t[-1] * 1e3:.1f} ms")
    else:
        report.judge(SCRAPE, None)
    report.judge(RSS, max(rss_mb) if rss_mb else None, exact=True,
                 note=f"{rss_idle_mb:.1f} MB before any device")
    return report


def _start_fleet(work: Path, port: int, n: int):
    """The simulator's devices (model digits, release 1) and a drift document for each."""
    import json

    from runtime.contracts.mqtt.signing import OperatorKeys
    from toolchain.fleet.client import BrokerSettings
    from toolchain.fleet.sim.fleet import SimFleet
    from toolchain.fleet.synthetic import SyntheticFleet
    from toolchain.ota.keys import init_keys

    root = init_keys(keys_dir=work / "keys")
    keys = OperatorKeys.from_root(json.loads(Path(root).read_text()))
    sim = SimFleet(n=n, fleet="sim", settings=BrokerSettings(port=port), keys=keys, model="digits", release=1)
    sim.start()
    drift = SyntheticFleet(port, fleet="sim", n=n, model="digits", release=1, new_share=1.0)
    drift.devices = sorted(sim.devices)
    drift.release = {d: 1 for d in drift.devices}
    drift.drift_round()
    drift.flush(60)
    return sim, drift


if __name__ == "__main__":
    sys.exit(main())
