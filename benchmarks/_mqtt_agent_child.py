"""The agent process of benchmarks/mqtt_outage.py: a real ``Agent`` serving the tiny model at a
steady rate and its telemetry service (``device_agent.mqtt.start``, as ``edgeship-agent run``
does) emitting a steady stream of events plus its metrics windows, until it is killed or told
to stop. It reports on stdout, one JSON object per line, each written with one ``os.write``
after the call it reports returned:

  {"q": msg_id}          the message is queued: enqueue() returned (events, metrics windows), or
                         flush() returned after it was staged (a batch staged every 0.1 s)
  {"status": {...}}      every 0.5 s: served, served_offline, failed, depth, connected
  {"final": {...}}       after "stop" on stdin: the last status, after a clean stop

usage (by the parent, see AgentProcess): python benchmarks/_mqtt_agent_child.py STATE_DIR QUEUE_DIR
       PORT RPS EVENTS_PER_S STAGED_PER_S REPLAY_PER_S
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _say(doc: dict) -> None:
    os.write(1, (json.dumps(doc) + "\n").encode())


def _steady(period_s: float, stop: threading.Event, fn) -> None:
    nxt = time.monotonic()
    while not stop.is_set():
        fn()
        nxt += period_s
        time.sleep(max(0.0, nxt - time.monotonic()))


def _run(state: str, queue_dir: str, port: int, rps: float, events_per_s: float, staged_per_s: float,
         replay_per_s: float) -> int:
    import logging

    import numpy as np

    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.mqtt import MqttConfig, start
    from device_agent.mqtt.queue import MessageClass
    from runtime.contracts.mqtt.messages import Kind
    from runtime.contracts.mqtt.payloads import Severity

    logging.basicConfig(level=logging.ERROR)  # the expected disconnect warnings would clutter stderr
    agent = Agent(AgentConfig.for_state_dir(state))
    svc = start(MqttConfig(fleet="bench", device_id="dev1", port=port, queue_dir=queue_dir, metrics_interval_s=1.0,
                           reconnect_min_s=1, reconnect_max_s=2, replay_max_per_s=replay_per_s), agent, None)
    enqueue = svc.link.enqueue

    def reporting_enqueue(*a, **kw):
        mid = enqueue(*a, **kw)
        _say({"q": mid})
        return mid

    svc.link.enqueue = reporting_enqueue
    counts = {"served": 0, "served_offline": 0, "failed": 0, "first_error": None}
    x = np.ones((1, 4), dtype=np.float32)

    def serve() -> None:
        try:
            agent.infer({"x": x})
            counts["served"] += 1
            counts["served_offline"] += not svc.link.connected
        except Exception as e:  # counted: the figure is "no request fails"
            counts["failed"] += 1
            counts["first_error"] = counts["first_error"] or repr(e)

    def emit() -> None:
        svc.emit_event(category="bench", severity=Severity.INFO, reason_code="tick", detail="steady")

    per_batch = max(1, round(staged_per_s / 10))

    def stage_batch() -> None:  # high-rate telemetry: staged, then one flush says "queued"
        body = {"category": "bench", "severity": "info", "reason_code": "staged", "detail": "batch"}
        ids = [svc.link.stage(MessageClass.EVENTS, svc.topics.events, Kind.EVENT, body) for _ in range(per_batch)]
        svc.link.flush()
        for mid in ids:
            _say({"q": mid})

    def status() -> dict:
        return {**counts, "depth": svc.queue.depth(), "connected": svc.link.connected}

    stop = threading.Event()
    threads = [threading.Thread(target=_steady, args=(1.0 / rps, stop, serve), daemon=True),
               threading.Thread(target=_steady, args=(1.0 / events_per_s, stop, emit), daemon=True),
               threading.Thread(target=_steady, args=(0.1, stop, stage_batch), daemon=True),
               threading.Thread(target=_steady, args=(0.5, stop, lambda: _say({"status": status()})), daemon=True)]
    for t in threads:
        t.start()
    sys.stdin.readline()  # "stop" (or EOF: the parent went away)
    stop.set()
    for t in threads:
        t.join(5)
    svc.stop(timeout_s=3)
    agent.close()
    _say({"final": status()})
    return 0


class AgentProcess:
    """The parent's handle on one agent process: its reports, collected by a reader thread."""

    def __init__(self, *, state: Path, queue_dir: Path, port: int, rps: float, events_per_s: float,
                 staged_per_s: float, replay_per_s: float) -> None:
        self.queued: set[int] = set()
        self.status: dict = {}
        self.final: dict | None = None
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(state), str(queue_dir), str(port), str(rps),
             str(events_per_s), str(staged_per_s), str(replay_per_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            doc = json.loads(line)
            with self._lock:
                if "q" in doc:
                    self.queued.add(doc["q"])
                elif "status" in doc:
                    self.status = doc["status"]
                elif "final" in doc:
                    self.final = doc["final"]

    def snapshot(self) -> tuple[set[int], dict]:
        with self._lock:
            return set(self.queued), dict(self.status)

    def kill(self) -> None:
        """SIGKILL, then collect every report written before it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)

    def stop(self, timeout_s: float = 30) -> dict | None:
        """A clean stop; returns the final status."""
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout_s)
        self._reader.join(10)
        return self.final

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(_run(a[0], a[1], int(a[2]), float(a[3]), float(a[4]), float(a[5]), float(a[6])))
