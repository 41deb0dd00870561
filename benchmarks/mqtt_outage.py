"""Broker outage under steady inference and telemetry (issue 6).

A real agent serves a tiny ONNX model at a steady rate while its telemetry service publishes
metrics windows and a steady stream of events. The broker is stopped for --outage-s seconds
(30 by default) and started again. Figures: inference requests and failures during the
outage, messages queued on disk, and after the restart: every queued message id at the
consumer, duplicates removed by msg_id, replay time and rate (rate-limited, flagged hist).

usage: python benchmarks/mqtt_outage.py [--outage-s 30] [--rps 100] [--events-per-s 50]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _wait(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def main() -> int:  # noqa: PLR0915 - one linear measurement script
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outage-s", type=float, default=30.0)
    ap.add_argument("--rps", type=float, default=100.0, help="steady inference requests per second")
    ap.add_argument("--events-per-s", type=float, default=50.0, help="steady event messages per second")
    ap.add_argument("--replay-per-s", type=float, default=500.0, help="[mqtt] replay_max_per_s")
    args = ap.parse_args()
    from _mqtt_setup import bench_device
    from runtime.contracts.mqtt.payloads import Severity
    from toolchain.fleet.localbroker import record_enqueued

    with bench_device("edgeship-bench-outage-", topic="edgeship/v1/bench/dev1/#", client_id="outage-consumer",
                      reconnect_min_s=1, reconnect_max_s=2,
                      replay_max_per_s=args.replay_per_s) as (_, broker, agent, rec, svc):
        if not svc.link.wait_connected(10):
            print("agent could not connect", file=sys.stderr)
            return 1
        produced = record_enqueued(svc.link)
        stop = threading.Event()
        counts = {"ok": 0, "failed": 0, "ok_outage": 0}
        outage = threading.Event()
        errors: list[str] = []

        def serve():
            x = np.ones((1, 4), dtype=np.float32)
            period = 1.0 / args.rps
            nxt = time.monotonic()
            while not stop.is_set():
                try:
                    agent.infer({"x": x})
                    counts["ok"] += 1
                    counts["ok_outage"] += outage.is_set()
                except Exception as e:  # counted: the figure is "no request fails"
                    counts["failed"] += 1
                    errors.append(repr(e))
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))

        def emit():
            period = 1.0 / args.events_per_s
            nxt = time.monotonic()
            while not stop.is_set():
                svc.emit_event(category="bench", severity=Severity.INFO, reason_code="tick", detail="steady")
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))

        threads = [threading.Thread(target=serve), threading.Thread(target=emit)]
        for t in threads:
            t.start()
        time.sleep(3.0)
        broker.stop()
        outage.set()
        t_down = time.monotonic()
        _wait(lambda: not svc.link.connected, 10)
        time.sleep(max(0.0, args.outage_s - (time.monotonic() - t_down)))
        depth_at_restart = svc.queue.stats().depth
        broker.start()
        outage.clear()
        t_up = time.monotonic()
        _wait(lambda: svc.link.connected, 30)
        t_conn = time.monotonic()
        _wait(lambda: svc.queue.stats().depth < 20, 300)
        t_drained = time.monotonic()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join()
        all_in = _wait(lambda: produced <= rec.ids(), 120)
        missing = produced - rec.ids()
        replayed = rec.hist
        print(f"edgeship MQTT broker outage ({args.outage_s:.0f} s) under steady inference and telemetry")
        print(f"  inference: {counts['ok']} requests ok ({counts['ok_outage']} while the broker was down), "
              f"{counts['failed']} failed")
        print(f"  queued on disk when the broker came back   {depth_at_restart} messages")
        print(f"  reconnect after broker start               {t_conn - t_up:.2f} s (backoff 1-2 s)")
        print(f"  backlog drained in                         {t_drained - t_conn:.2f} s "
              f"(replay limit {args.replay_per_s:.0f} msg/s)")
        print(f"  messages produced / at consumer            {len(produced)} / {len(produced & rec.ids())} "
              f"(missing {len(missing)})")
        print(f"  duplicates received, removed by msg_id     {rec.duplicates}")
        print(f"  replayed messages flagged hist=true        {replayed}")
        ok = all_in and not missing and counts["failed"] == 0
        print(f"  every queued message arrived, none twice after de-dup, no request failed: {'PASS' if ok else 'FAIL'}")
        if errors:
            print("  first inference error:", errors[0])
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
