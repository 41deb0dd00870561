"""Telemetry throughput of edgeship's durable queue against a raw paho client, side by side
in one run (issues 6 and 15).

One local mosquitto, one subscriber in its own process (benchmarks/_mqtt_consumer.py, QoS 1,
parses every message, de-duplicates by msg_id). Each round sends --messages messages and is
timed from the first send to the last arrival at the subscriber:

- raw paho: a plain paho-mqtt client publishes ready-made payloads (the very documents
  edgeship sends, encoded before the clock starts) at QoS 1 with the same max_inflight, and
  paho keeps what is above the window in memory. No disk, no encoding: the bound.
- edgeship: the agent's telemetry service takes every message through the full durable path:
  ``MqttLink.enqueue`` (the call ``emit_event`` makes: envelope, JSON encode once, SQLite WAL
  insert group-committed, returning only once committed), publish from the committed batch,
  QoS 1 PUBACK, delete in batches.

Rounds are paired and interleaved (round i of both sides back to back, the order alternating),
and the verdict is on the per-pair ratio edgeship/raw; the load is measured per round (see
benchmarks/_mqtt_verdict.py). Targets: TARGETS below.

usage: python benchmarks/mqtt_throughput.py [--rounds 5] [--messages 20000] [--inflight 100]
                                            [--producers 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mqtt_verdict import (  # noqa: E402
    CpuMonitor, Load, Row, Target, exit_code, info, judge_exact, judge_spread, summary,
)

TARGETS = {
    "ratio": Target("end-to-end rate, edgeship / raw paho (paired rounds)", ">=", 0.70, "x", ".2f"),
    "lost": Target("messages lost by edgeship (all rounds)", "<=", 0, "", ",.0f"),
    "rate": Target("edgeship end-to-end rate (issue 6)", ">=", 1000, "msg/s", ",.0f"),
}
#: raw paho does a subset of edgeship's work: a pair where edgeship ran this much faster
#: says the round was disturbed, not that edgeship beat its bound
SANITY_MAX_RATIO = 1.10
RAW_ID_BASE = 1 << 40
TOPIC_FILTER = "edgeship/v1/bench/+/events"


@dataclass(frozen=True)
class RoundResult:
    side: str            # "raw" or "edgeship"
    messages: int
    lost: int
    duplicates: int
    rate: float          # delivered / (last arrival - first send), msg/s
    send_rate: float     # messages handed over (published / queued) per second
    cpu_us_per_msg: float  # CPU time of the sending process (all its threads) per message
    load: Load


def judge(edge: list[RoundResult], raw: list[RoundResult]) -> list[Row]:
    """The verdict rows (pure): ``edge[i]`` and ``raw[i]`` are the two halves of pair i."""
    ratios = [e.rate / r.rate if r.rate > 0 else 0.0 for e, r in zip(edge, raw)]
    loads = [x.load for x in edge + raw]
    refuse = [f"pair {i + 1}: raw paho lost {r.lost} messages, the bound is void" for i, r in enumerate(raw) if r.lost]
    refuse += [f"pair {i + 1}: edgeship ran {q:.2f}x raw paho, which does a subset of its work: a disturbed round"
               for i, q in enumerate(ratios) if q > SANITY_MAX_RATIO]
    return [
        judge_spread(TARGETS["ratio"], ratios, loads=loads, refuse=refuse),
        judge_exact(TARGETS["lost"], sum(e.lost for e in edge)),
        judge_spread(TARGETS["rate"], [e.rate for e in edge], loads=[e.load for e in edge], load_lowers=True),
        info("raw paho end-to-end rate", [r.rate for r in raw], unit="msg/s", fmt=",.0f"),
        info("edgeship enqueue rate (returned = committed)", [e.send_rate for e in edge], unit="msg/s", fmt=",.0f"),
        info("CPU per message, raw paho publisher process", [r.cpu_us_per_msg for r in raw], unit="us", fmt=",.1f"),
        info("CPU per message, edgeship agent process", [e.cpu_us_per_msg for e in edge], unit="us", fmt=",.1f"),
        info("duplicates seen by the consumer (edgeship)", sum(e.duplicates for e in edge), fmt=",.0f"),
    ]


# ------------------------------------------------------------------ the two sides
def _event_body(i: int) -> dict:
    return {"category": "bench", "severity": "info", "reason_code": "tick", "detail": "throughput",
            "context": {"i": i}}


def _wait(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


class RawSide:
    """A plain paho client on the same broker, publishing pre-encoded edgeship documents."""

    def __init__(self, port: int, *, inflight: int, boot_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="raw-baseline",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(inflight)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.boot_id = boot_id
        self.next_id = RAW_ID_BASE

    def payloads(self, n: int) -> tuple[list[int], list[bytes]]:
        from runtime.contracts.mqtt import payloads
        from runtime.contracts.mqtt.messages import Kind

        ids, out = list(range(self.next_id, self.next_id + n)), []
        self.next_id += n
        for seq, mid in enumerate(ids):
            origin = payloads.Origin("bench", "raw", self.boot_id, mid, int(time.time() * 1000),
                                     int(time.monotonic() * 1000))
            doc = payloads.envelope(Kind.EVENT, origin, _event_body(seq))
            out.append(payloads.stamp(payloads.encode(doc), seq=seq, hist=False))
        return ids, out

    def send(self, raw: list[bytes]) -> list:
        return [self.client.publish("edgeship/v1/bench/raw/events", p, qos=1) for p in raw]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _edge_send(svc, n: int, producers: int) -> list[int]:
    from device_agent.mqtt.queue import MessageClass
    from runtime.contracts.mqtt.messages import Kind

    link, topic = svc.link, svc.topics.events
    if producers == 1:
        return [link.enqueue(MessageClass.EVENTS, topic, Kind.EVENT, _event_body(i)) for i in range(n)]
    parts: list[list[int]] = [[] for _ in range(producers)]

    def produce(k: int) -> None:
        parts[k] = [link.enqueue(MessageClass.EVENTS, topic, Kind.EVENT, _event_body(i))
                    for i in range(k, n, producers)]

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [i for p in parts for i in p]


def _round(side: str, n: int, *, consumer, pids, send) -> RoundResult:
    consumer.reset()
    cpu0 = time.process_time()
    with CpuMonitor(pids) as mon:
        t0 = time.monotonic()
        ids = send()
        t_sent = time.monotonic()
        got = consumer.wait(ids, timeout_s=max(60.0, n / 200.0))
    cpu = time.process_time() - cpu0
    lost = got["missing"]
    span = (got["last_ts"] - t0) if got["last_ts"] else float("inf")
    return RoundResult(side, n, lost, got["duplicates"], (n - lost) / span, n / max(1e-9, t_sent - t0),
                       cpu / n * 1e6, mon.load)


def run(args) -> tuple[list[RoundResult], list[RoundResult], dict]:
    from _mqtt_consumer import Consumer
    from _mqtt_setup import bench_device

    edge: list[RoundResult] = []
    raw: list[RoundResult] = []
    with bench_device("edgeship-bench-tput-", topic=None, max_inflight=args.inflight) as dev:
        svc = dev.svc
        if not svc.link.wait_connected(10):
            raise RuntimeError("the agent could not connect to the benchmark's broker")
        baseline = RawSide(dev.broker.port, inflight=args.inflight, boot_id=svc.link.boot_id)
        with Consumer(dev.broker.port, TOPIC_FILTER) as consumer:
            pids = [os.getpid(), dev.broker.proc.pid, consumer.pid]

            def one(side: str, n: int) -> RoundResult:
                if side == "raw":
                    ids, data = baseline.payloads(n)
                    infos: list = []
                    res = _round(side, n, consumer=consumer, pids=pids,
                                 send=lambda: (infos.extend(baseline.send(data)), ids)[1])
                    _wait(lambda: all(i.is_published() for i in infos[-100:]), 30)
                    return res
                res = _round(side, n, consumer=consumer, pids=pids, send=lambda: _edge_send(svc, n, args.producers))
                _wait(lambda: svc.queue.depth() == 0 and svc.link.inflight_count() == 0, 30)
                return res

            one("raw", args.messages // 10)  # warm-up of both paths, not counted
            one("edgeship", args.messages // 10)
            stats0, acked0 = svc.queue.stats(), svc.link.counters.acked
            for r in range(args.rounds):
                order = ("raw", "edgeship") if r % 2 == 0 else ("edgeship", "raw")
                got = {side: one(side, args.messages) for side in order}
                raw.append(got["raw"])
                edge.append(got["edgeship"])
                e = got["edgeship"]
                print(f"  pair {r + 1}/{args.rounds}: raw paho {got['raw'].rate:,.0f} msg/s, edgeship "
                      f"{e.rate:,.0f} msg/s (enqueued {e.send_rate:,.0f}/s, lost {e.lost}) -> "
                      f"{e.rate / got['raw'].rate:.2f}x; {e.load.text()}", flush=True)
            stats = svc.queue.stats()
            queue = {"rows_per_commit": (stats.rows_committed - stats0.rows_committed) / max(1, stats.commits - stats0.commits),
                     "acked_per_delete": (svc.link.counters.acked - acked0) / max(1, stats.ack_commits - stats0.ack_commits),
                     "broker_rejected": svc.link.counters.broker_rejected}
        baseline.close()
    return edge, raw, queue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds (raw paho + edgeship each)")
    ap.add_argument("--messages", type=int, default=20000, help="messages per round")
    ap.add_argument("--inflight", type=int, default=100, help="[mqtt] max_inflight, and the raw client's")
    ap.add_argument("--producers", type=int, default=1, help="threads calling enqueue in the edgeship rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    if args.rounds < 1 or args.messages < 100 or args.inflight < 1 or args.producers < 1:
        ap.error("--rounds, --inflight and --producers must be >= 1, --messages >= 100")
    print(f"edgeship MQTT telemetry throughput: {args.rounds} paired rounds of {args.messages:,} messages, "
          f"QoS 1, max_inflight {args.inflight}, {args.producers} producer thread(s), one mosquitto, "
          f"one subscriber process", flush=True)
    edge, raw, queue = run(args)
    rows = judge(edge, raw)
    rows.append(info("edgeship rows per SQLite insert transaction", queue["rows_per_commit"], fmt=",.1f"))
    rows.append(info("edgeship acknowledged rows per delete transaction", queue["acked_per_delete"], fmt=",.1f"))
    if args.json:
        print(json.dumps({"rounds": [asdict(x) for x in raw + edge], "queue": queue,
                          "rows": [{"name": r.target.name, "values": r.values, "verdict": r.verdict and r.verdict.value,
                                    "reason": r.reason} for r in rows], "exit": exit_code(rows)}))
    else:
        print("\n".join(r.line() for r in rows))
        print(summary(rows))
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
