"""`edgeship fleet exporter` with 1,000 devices (issue 12 figure): scrape time and RSS.

The devices are the fleet simulator's (``toolchain.fleet.sim.SimFleet``, what `edgeship fleet
simulate --devices N` runs): retained status and reported state, a ``telemetry/metrics`` window
every 2 s per device, built by the contracts' code. Simulated devices run no drift monitor, so
each also gets a retained ``telemetry/drift`` document from ``toolchain.fleet.synthetic`` (real
payloads through the contract's builder). A real ``edgeship fleet exporter`` process subscribes
through a local mosquitto; once it tracks every device, ``/metrics`` is scraped ``--scrapes``
times while the simulator keeps publishing.

Targets: scrape p95 < 500 ms (Prometheus' default scrape timeout is 10 s), exporter RSS < 200 MB.
Usage: ``python benchmarks/fleet_exporter.py [--devices 1000] [--rounds 3] [--scrapes 20]``. Exit 1 on a miss.
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

SCRAPE_P95_MS = 500.0
RSS_MB = 200.0


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
    ap.add_argument("--scrapes", type=int, default=20)
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
    try:
        proc.stdout.readline()  # "edgeship fleet exporter: http://..." once it serves
        rss_idle = _rss_mb(proc.pid)
        t0 = time.perf_counter()
        sim, drift = _start_fleet(work, broker.port, args.devices)
        started = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        want = float(args.devices * args.rounds)
        while time.monotonic() < deadline:
            _, text = _scrape(port)
            got = _sample(text, 'edgeship_fleet_exporter_messages_total{kind="metrics"}') or 0.0
            if _sample(text, "edgeship_fleet_exporter_devices") == args.devices and got >= want:
                break
            time.sleep(0.5)
        else:
            print(f"FAIL the exporter did not track {args.devices} devices within 120 s")
            return 1
        times, size = [], 0
        for _ in range(args.scrapes):  # the simulator keeps publishing its windows meanwhile
            dt, text = _scrape(port)
            times.append(dt * 1e3)
            size = len(text)
            time.sleep(0.2)
        rss = _rss_mb(proc.pid)
        series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        metrics_seen = _sample(text, 'edgeship_fleet_exporter_messages_total{kind="metrics"}')
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
    t = np.array(times)
    p50, p95 = np.percentile(t, 50), np.percentile(t, 95)
    print(f"edgeship fleet exporter, {args.devices} devices of the fleet simulator (metrics every 2 s; started in "
          f"{started:.1f} s) + a retained drift document each; {args.scrapes} scrapes during live telemetry:")
    print(f"  scrape     p50 {p50:.1f} ms  p95 {p95:.1f} ms  max {t.max():.1f} ms  ({series} series, "
          f"{size / 1e6:.2f} MB; {metrics_seen:.0f} metrics windows read, {malformed:.0f} malformed)")
    print(f"  RSS        {rss:.1f} MB with {args.devices} devices ({rss_idle:.1f} MB before any device)")
    ok = True
    # the simulator sends well-formed telemetry only: a malformed count is the exporter's bug
    for name, value, limit, unit in (("scrape p95", p95, SCRAPE_P95_MS, "ms"), ("RSS", rss, RSS_MB, "MB"),
                                     ("malformed messages", malformed, 1, "")):
        verdict = "PASS" if value < limit else "FAIL"
        ok &= verdict == "PASS"
        print(f"{verdict} {name}: {value:.1f} {unit} < {limit:.0f} {unit}" if verdict == "PASS"
              else f"{verdict} {name}: {value:.1f} {unit} >= {limit:.0f} {unit}")
    return 0 if ok else 1


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
