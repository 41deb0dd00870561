"""The one subscriber of the MQTT benchmarks, in its own process (as a real consumer is).

It subscribes to a topic filter (QoS 1), parses every message as JSON and records the first
arrival time (CLOCK_MONOTONIC, shared by every process of this boot) of each ``msg_id``,
counting duplicates. The parent talks to it over stdin/stdout, one JSON object per line:

  {"cmd": "reset"}                                   -> {"ok": true}         forget all arrivals
  {"cmd": "wait", "ids": [...], "timeout_s": 60}     -> {"missing": n, "first_ts": t0, "last_ts": t1,
                                                         "duplicates": d, "received": k}
  {"cmd": "quit"}

``wait`` returns as soon as every id has arrived (or at the timeout); ``first_ts``/``last_ts``
are the first and last arrival among the ids that did.

usage (by the parent, see Consumer): python benchmarks/_mqtt_consumer.py PORT TOPIC_FILTER
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path


class _Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived: dict[int, float] = {}
        self.duplicates = 0
        self.received = 0
        self.want: set[int] = set()
        self.complete = threading.Event()

    def on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        try:
            mid = json.loads(msg.payload)["msg_id"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.received += 1
            if mid in self.arrived:
                self.duplicates += 1
                return
            self.arrived[mid] = now
            if mid in self.want:
                self.want.discard(mid)
                if not self.want:
                    self.complete.set()

    def reset(self) -> dict:
        with self.lock:
            self.arrived.clear()
            self.duplicates = self.received = 0
        return {"ok": True}

    def wait(self, ids: list[int], timeout_s: float) -> dict:
        with self.lock:
            self.want = set(ids) - self.arrived.keys()
            self.complete.clear()
            if not self.want:
                self.complete.set()
        self.complete.wait(timeout_s)
        with self.lock:
            times = [self.arrived[i] for i in ids if i in self.arrived]
            missing = len(self.want)
            self.want = set()
            return {"missing": missing, "first_ts": min(times) if times else None,
                    "last_ts": max(times) if times else None, "duplicates": self.duplicates,
                    "received": self.received}


def _serve(port: int, topic_filter: str) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sink = _Sink()
    subscribed = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-consumer",
                         protocol=mqtt.MQTTv5)
    client.on_message = sink.on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(10):
        print(json.dumps({"error": "could not subscribe"}), flush=True)
        return 1
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        out = sink.reset() if req["cmd"] == "reset" else sink.wait(req["ids"], float(req["timeout_s"]))
        print(json.dumps(out), flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


class Consumer:
    """The parent's handle on a consumer process (``with Consumer(port, filter) as c: ...``)."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(port), topic_filter],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"benchmark consumer did not start: {ready}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark consumer exited (code {self.proc.poll()})")
        return json.loads(line)

    def _ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def reset(self) -> None:
        self._ask({"cmd": "reset"})

    def wait(self, ids: list[int], *, timeout_s: float) -> dict:
        """Block until every id arrived or ``timeout_s``; the arrival figures (see the module doc)."""
        return self._ask({"cmd": "wait", "ids": list(ids), "timeout_s": timeout_s})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(_serve(int(sys.argv[1]), sys.argv[2]))
