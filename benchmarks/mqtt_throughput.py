"""Telemetry throughput from one agent to a local mosquitto (issue 6: >= 1,000 messages/s).

Every message goes the full durable path: JSON envelope, SQLite WAL insert, QoS 1 publish,
PUBACK, delete. A consumer with its own MQTT connection counts what arrives and checks that
every message id arrived (after de-duplication by msg_id).

usage: python benchmarks/mqtt_throughput.py [--seconds 10] [--inflight 100]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the producer runs")
    ap.add_argument("--inflight", type=int, default=100, help="[mqtt] max_inflight")
    args = ap.parse_args()
    from _mqtt_setup import bench_device
    from runtime.contracts.mqtt.payloads import Kind, Severity
    from device_agent.mqtt.queue import MessageClass

    with bench_device("edgeship-bench-tput-", topic="edgeship/v1/bench/dev1/events",
                      max_inflight=args.inflight) as (_, _, _, rec, svc):
        if not svc.link.wait_connected(10):
            print("agent could not connect", file=sys.stderr)
            return 1
        produced: list[int] = []
        depth_max = [0]
        stop = threading.Event()

        def watch_depth():
            while not stop.wait(0.2):
                depth_max[0] = max(depth_max[0], svc.queue.stats().depth)

        threading.Thread(target=watch_depth, daemon=True).start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:  # the same call svc.emit_event makes
            body = {"category": "bench", "severity": Severity.INFO.value, "reason_code": "tick",
                    "detail": "throughput", "context": {"i": len(produced)}}
            produced.append(svc.link.enqueue(MessageClass.EVENTS, svc.topics.events, Kind.EVENT, body))
        t_produced = time.monotonic()
        want = set(produced)
        deadline = time.monotonic() + 120
        while not want <= rec.ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        t_done = time.monotonic()
        stop.set()
        got = want & rec.ids()
        n = len(produced)
        print("edgeship MQTT telemetry throughput (one agent -> local mosquitto, QoS 1, durable SQLite queue)")
        print(f"  messages produced            {n} in {t_produced - t0:.2f} s  ({n / (t_produced - t0):,.0f} msg/s enqueued)")
        print(f"  delivered to the consumer    {len(got)} / {n}  (missing {n - len(got)}, duplicates seen {rec.duplicates})")
        print(f"  sustained end-to-end rate    {len(got) / (t_done - t0):,.0f} msg/s  (first enqueue -> last delivery, {t_done - t0:.2f} s)")
        print(f"  max queue depth on disk      {depth_max[0]}")
        print(f"  broker acks                  {svc.link.counters.acked}, broker-rejected {svc.link.counters.broker_rejected}")
        ok = len(got) == n and len(got) / (t_done - t0) >= 1000
        print(f"  target >= 1,000 msg/s: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
