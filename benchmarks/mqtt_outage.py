"""Broker outage plus an agent kill -9, under steady inference and telemetry (issues 6 and 15).

A real agent process (benchmarks/_mqtt_agent_child.py: the Agent serving the tiny ONNX model
at --rps and its telemetry service, as ``edgeship-agent run`` starts it) emits a steady
stream of events (``enqueue``) plus its metrics windows, and stages --staged-per-s more in a
batch every 0.1 s (``stage``, then ``flush``); it reports every message it was told is
queued (``enqueue`` or the batch's ``flush`` returned). The broker is stopped for --outage-s seconds (30); --kill-at-s into
the outage the agent is killed with SIGKILL while its backlog is on disk only, and a new
agent process starts on the same state directory (the broker still away). When the broker
returns, the new agent replays both backlogs (rate-limited, flagged hist) and goes on live.

Judged: every message either process was told is queued is on disk right after the kill
(read from the queue file) and at the consumer at the end (after de-duplication by msg_id);
no inference request fails. Counts are exact, so load cannot change them; it is printed.

usage: python benchmarks/mqtt_outage.py [--outage-s 30] [--kill-at-s 15] [--rps 100]
                                        [--events-per-s 50] [--staged-per-s 200]
                                        [--replay-per-s 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _verdict import Row, Target, exit_code, info, judge, summary  # noqa: E402

TARGETS = {
    "lost_at_kill": Target("queued by the killed agent, neither on disk after kill -9 nor delivered", "<=", 0, "",
                           ",.0f", load="none"),
    "missing": Target("queued messages missing at the consumer (both agents)", "<=", 0, "", ",.0f", load="none"),
    "failed": Target("inference requests failed (both agents)", "<=", 0, "", ",.0f", load="none"),
}


@dataclass(frozen=True)
class OutageFigures:
    queued_first: int            # messages the killed agent was told are queued
    queued_second: int           # messages the restarted agent was told are queued
    on_disk_at_kill: int         # rows in the queue file right after the kill
    lost_at_kill: int            # queued by the killed agent, neither on disk after the kill nor delivered
    depth_at_broker_start: int
    at_consumer: int             # of all queued messages, after de-duplication
    missing: int
    duplicates: int
    hist: int                    # replayed messages flagged hist=true
    served: int                  # inference requests ok (both agents)
    served_offline: int          # of them, while the agent had no broker
    failed: int
    backlog: int                 # queued while the broker was away, not yet delivered when it came back
    reconnect_s: float
    drain_s: float               # reconnect -> every message of the backlog at the consumer
    loadavg: tuple[float, float]  # 1-minute load average at the start and at the end


def verdicts(f: OutageFigures) -> list[Row]:
    """The verdict rows (pure)."""
    return [
        judge(TARGETS["lost_at_kill"], f.lost_at_kill, exact=True),
        judge(TARGETS["missing"], f.missing, exact=True),
        judge(TARGETS["failed"], f.failed, exact=True),
        info("messages queued by the killed agent", f.queued_first, fmt=",.0f"),
        info("messages queued by the restarted agent", f.queued_second, fmt=",.0f"),
        info("rows on disk right after the kill", f.on_disk_at_kill, fmt=",.0f"),
        info("queued on disk when the broker came back", f.depth_at_broker_start, fmt=",.0f"),
        info("at the consumer (de-duplicated by msg_id)", f.at_consumer, fmt=",.0f"),
        info("duplicates received, removed by msg_id", f.duplicates, fmt=",.0f"),
        info("replayed messages flagged hist=true", f.hist, fmt=",.0f"),
        info("inference requests ok", f.served, fmt=",.0f"),
        info("of them while the agent had no broker", f.served_offline, fmt=",.0f"),
        info("reconnect after broker start", f.reconnect_s, unit="s", fmt=".2f"),
        info("backlog (queued while the broker was away) at the consumer in", f.drain_s, unit="s", fmt=".2f"),
        info("backlog replay rate (limit replay_max_per_s; live traffic goes on)",
             f.backlog / f.drain_s if f.drain_s > 0 else 0.0, unit="msg/s", fmt=",.0f"),
        info("1-minute load average at the start", f.loadavg[0], fmt=".2f"),
        info("1-minute load average at the end", f.loadavg[1], fmt=".2f"),
    ]


def _wait(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def _ids_on_disk(path: Path) -> set[int]:
    db = sqlite3.connect(str(path))
    try:
        return {r[0] for r in db.execute("SELECT msg_id FROM outbox")}
    finally:
        db.close()


def run(args) -> OutageFigures:  # noqa: PLR0915 - one linear measurement script
    from _mqtt_agent_child import AgentProcess
    from _mqtt_setup import install_tiny, workdir
    from runtime.contracts.statedir import QueueDir
    from toolchain.fleet.localbroker import Broker, Recorder

    load0 = os.getloadavg()[0]
    work = workdir("edgeship-bench-outage-")
    broker = Broker(str(work / "broker")).start()
    agents: list[AgentProcess] = []
    rec = None
    try:
        state, qdir = install_tiny(work), work / "telemetry"
        rec = Recorder(broker.port, "edgeship/v1/bench/dev1/#", client_id="outage-consumer")

        def agent() -> AgentProcess:
            agents.append(AgentProcess(state=state, queue_dir=qdir, port=broker.port, rps=args.rps,
                                       events_per_s=args.events_per_s, staged_per_s=args.staged_per_s,
                                       replay_per_s=args.replay_per_s))
            return agents[-1]

        first = agent()
        if not _wait(lambda: first.snapshot()[1].get("connected"), 30):
            raise RuntimeError("the agent could not connect to the benchmark's broker")
        print("  agent connected; live for 3 s, then the broker stops", flush=True)
        time.sleep(3.0)
        broker.stop()
        t_down = time.monotonic()
        _wait(lambda: first.snapshot()[1].get("connected") is False, 10)
        time.sleep(max(0.0, args.kill_at_s - (time.monotonic() - t_down)))
        first.kill()
        queued_first, st_first = first.snapshot()
        disk = _ids_on_disk(QueueDir(qdir).queue)
        print(f"  kill -9 at {time.monotonic() - t_down:.1f} s into the outage: {len(queued_first)} messages "
              f"queued by it, {len(disk)} rows on disk; restarting the agent", flush=True)
        second = agent()
        time.sleep(max(0.0, args.outage_s - (time.monotonic() - t_down)))
        depth_at_start = second.snapshot()[1].get("depth", -1)
        broker.start()
        t_up = time.monotonic()
        backlog = (queued_first | second.snapshot()[0]) - rec.ids()   # queued while the broker was away
        _wait(lambda: second.snapshot()[1].get("connected"), 30)
        t_conn = time.monotonic()
        print(f"  broker back after {t_up - t_down:.1f} s; agent reconnected in {t_conn - t_up:.2f} s, "
              f"replaying {len(backlog)} messages queued meanwhile", flush=True)
        _wait(lambda: backlog <= rec.ids(), 300)
        t_drained = time.monotonic()
        time.sleep(2.0)
        final = second.stop() or second.snapshot()[1]
        produced = queued_first | second.snapshot()[0]
        _wait(lambda: produced <= rec.ids(), 120)
        got = rec.ids()
        # delivered before the outage (deleted on PUBACK) or on disk: what the kill may not lose
        lost_at_kill = len(queued_first - got - disk)
        return OutageFigures(
            queued_first=len(queued_first), queued_second=len(second.snapshot()[0]), on_disk_at_kill=len(disk),
            lost_at_kill=lost_at_kill, depth_at_broker_start=depth_at_start, at_consumer=len(produced & got),
            missing=len(produced - got), duplicates=rec.duplicates, hist=rec.hist,
            served=st_first.get("served", 0) + final.get("served", 0),
            served_offline=st_first.get("served_offline", 0) + final.get("served_offline", 0),
            failed=st_first.get("failed", 0) + final.get("failed", 0),
            backlog=len(backlog), reconnect_s=t_conn - t_up, drain_s=t_drained - t_conn,
            loadavg=(load0, os.getloadavg()[0]))
    finally:
        for a in agents:
            a.close()
        if rec is not None:
            rec.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outage-s", type=float, default=30.0, help="how long the broker is away")
    ap.add_argument("--kill-at-s", type=float, default=15.0, help="when into the outage the agent is killed")
    ap.add_argument("--rps", type=float, default=100.0, help="steady inference requests per second")
    ap.add_argument("--events-per-s", type=float, default=50.0, help="steady event messages per second")
    ap.add_argument("--staged-per-s", type=float, default=200.0,
                    help="messages staged per second (stage() in batches every 0.1 s, each batch flush()ed)")
    ap.add_argument("--replay-per-s", type=float, default=500.0, help="[mqtt] replay_max_per_s")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    if not 0 < args.kill_at_s < args.outage_s or min(args.rps, args.events_per_s, args.staged_per_s,
                                                      args.replay_per_s) <= 0:
        ap.error("need 0 < --kill-at-s < --outage-s and positive rates")
    print(f"edgeship MQTT broker outage ({args.outage_s:.0f} s) and agent kill -9 ({args.kill_at_s:.0f} s into it) "
          f"under {args.rps:.0f} inference req/s, {args.events_per_s:.0f} events/s enqueued and "
          f"{args.staged_per_s:.0f}/s staged", flush=True)
    figures = run(args)
    rows = verdicts(figures)
    if args.json:
        print(json.dumps({"figures": asdict(figures), "rows": [
            {"name": r.target.name, "values": r.values, "verdict": r.verdict and r.verdict.value} for r in rows],
            "exit": exit_code(rows)}))
    else:
        print("\n".join(r.line() for r in rows))
        print(summary(rows))
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
