"""`edgeship fleet exporter` with 1,000 devices (issue 12 figure): scrape time and RSS.

The fleet simulator (`edgeship fleet simulate`) is not on main yet, so a publisher
(``toolchain.fleet.synthetic.SyntheticFleet``) emits the devices' real payloads, built with the
contract's builders, on their real topics: a retained status, ``telemetry/metrics`` windows
and a retained ``telemetry/drift`` per device, half the fleet on release 2 and half on 1.
A real ``edgeship fleet exporter`` process subscribes through a local mosquitto; once it
tracks every device, ``/metrics`` is scraped ``--scrapes`` times while telemetry keeps arriving.

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
    ap.add_argument("--rounds", type=int, default=3, help="metrics/drift rounds before measuring")
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args(argv)

    from toolchain.fleet.localbroker import Broker, free_port
    from toolchain.fleet.synthetic import SyntheticFleet

    work = Path(tempfile.mkdtemp(prefix="edgeship-bench-exporter-"))
    broker = Broker(str(work / "broker")).start()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "fleet", "exporter", "--broker",
                             f"127.0.0.1:{broker.port}", "--port", str(port), "--stale-after-s", "600"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sim = None
    try:
        proc.stdout.readline()  # "edgeship fleet exporter: http://..." once it serves
        rss_idle = _rss_mb(proc.pid)
        sim = SyntheticFleet(broker.port, n=args.devices)
        t0 = time.perf_counter()
        sim.birth()
        for _ in range(args.rounds):
            sim.metrics_round()
            sim.drift_round()
        sim.flush(120)
        published = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _, text = _scrape(port)
            if _sample(text, "edgeship_fleet_exporter_devices") == args.devices and \
                    f'edgeship_fleet_exporter_messages_total{{kind="metrics"}} {float(args.devices * args.rounds)}' in text:
                break
            time.sleep(0.5)
        else:
            print(f"FAIL the exporter did not track {args.devices} devices within 120 s")
            return 1
        stop = threading.Event()

        def keep_publishing():  # live telemetry while scraping: one device in ten per 0.5 s
            i = 0
            while not stop.is_set():
                sim.metrics_round(devices=sim.devices[i % 10::10])
                i += 1
                time.sleep(0.5)

        feeder = threading.Thread(target=keep_publishing, daemon=True)
        feeder.start()
        times, size = [], 0
        for _ in range(args.scrapes):
            dt, text = _scrape(port)
            times.append(dt * 1e3)
            size = len(text)
            time.sleep(0.2)
        stop.set()
        feeder.join()
        rss = _rss_mb(proc.pid)
        series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    finally:
        if sim is not None:
            sim.close()
        proc.terminate()
        proc.wait(10)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    t = np.array(times)
    p50, p95 = np.percentile(t, 50), np.percentile(t, 95)
    print(f"edgeship fleet exporter, {args.devices} devices (synthetic publisher, real payloads; "
          f"{args.rounds} rounds published in {published:.1f} s), {args.scrapes} scrapes during live telemetry:")
    print(f"  scrape     p50 {p50:.1f} ms  p95 {p95:.1f} ms  max {t.max():.1f} ms  ({series} series, {size / 1e6:.2f} MB)")
    print(f"  RSS        {rss:.1f} MB with {args.devices} devices ({rss_idle:.1f} MB before any device)")
    ok = True
    for name, value, limit, unit in (("scrape p95", p95, SCRAPE_P95_MS, "ms"), ("RSS", rss, RSS_MB, "MB")):
        verdict = "PASS" if value < limit else "FAIL"
        ok &= verdict == "PASS"
        print(f"{verdict} {name}: {value:.1f} {unit} < {limit:.0f} {unit}" if verdict == "PASS"
              else f"{verdict} {name}: {value:.1f} {unit} >= {limit:.0f} {unit}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
