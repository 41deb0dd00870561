"""Shared setup of the fleet benchmarks: one local mosquitto, operator keys, the simulator,
an in-process rollout controller and a passive subscriber that counts what crosses the broker
(the load during a run: ``_verdict.LoadMonitor``, like every benchmark)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator


class Counting:
    """Counts every message under the prefix by kind of leaf (a passive observer; it also
    notes when the rollout's retained state first says ``paused``)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.by_kind: Counter = Counter()
        self.enabled = False
        self.first: dict[str, float] = {}
        self.events: list[tuple[float, str, dict]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                        client_id=f"bench-counter-{os.getpid()}")
        ready = threading.Event()
        c.on_connect = lambda *a: c.subscribe("edgeship/v1/#", qos=0)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        ready.wait(10)
        self.client = c

    def _on(self, client, userdata, m) -> None:
        from runtime.contracts.mqtt.topics import in_rollouts, split_rollout_topic

        now = time.monotonic()
        if in_rollouts(m.topic):
            rollout = split_rollout_topic(m.topic)
            if rollout is not None and rollout[2] == "state" and m.payload:
                status = json.loads(m.payload).get("status")
                self.first.setdefault(f"{rollout[1]}:{status}", now)  # first arrival of each rollout status
            return
        parts = m.topic.split("/")
        leaf = "/".join(parts[4:])
        kind = "deploy" if leaf.startswith("deploy/") else "cmd" if leaf.startswith("cmd/") else leaf
        with self.lock:
            if self.enabled and not m.retain:
                self.by_kind[kind] += 1
            if kind == "deploy" and m.payload:
                doc = json.loads(m.payload)
                if doc.get("state") in ("commit", "failed", "rolled_back"):
                    self.events.append((now, parts[3], doc))
            elif kind == "telemetry/metrics" and m.payload:
                rel = (json.loads(m.payload).get("active_model") or {}).get("release")
                self.first.setdefault(f"metrics:r{rel}", now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def fleet_env() -> Iterator[dict]:
    from runtime.contracts.mqtt.signing import OperatorKeys
    from toolchain.fleet.localbroker import Broker
    from toolchain.fleet.signer import OperatorSigner
    from toolchain.ota.keys import init_keys

    work = Path(tempfile.mkdtemp(prefix="edgeship-fleet-bench-"))
    root = init_keys(keys_dir=work / "keys")
    broker = Broker(str(work / "broker")).start()
    try:
        yield {"work": work, "broker": broker, "keys_dir": work / "keys", "root": root,
               "keys": OperatorKeys.from_root(json.loads(root.read_text())),
               "signer": OperatorSigner.from_keys_dir(work / "keys")}
    finally:
        broker.stop()


def start_sim(env: dict, n: int, behaviour, *, fleet: str = "bench"):
    from toolchain.fleet.client import BrokerSettings, FleetClient
    from toolchain.fleet.sim.fleet import SimFleet

    sim = SimFleet(n=n, fleet=fleet, settings=BrokerSettings(port=env["broker"].port), keys=env["keys"],
                   model="tiny", release=1, behaviour=behaviour).start()
    with FleetClient(BrokerSettings(port=env["broker"].port)) as fc:
        deadline = time.monotonic() + 30
        while len(fc.snapshot(fleet, settle_s=0.3)) < n and time.monotonic() < deadline:
            time.sleep(0.2)
    return sim


def run_rollout(env: dict, plan_data: dict, *, fleet: str = "bench", stop_when=None, timeout_s: float = 300.0):
    """Plan -> targets -> waves -> journal -> controller (in this process); returns (state, seconds)."""
    from toolchain.fleet.client import BrokerSettings, FleetClient
    from toolchain.fleet.rollout.cohort import assign_waves, resolve_targets
    from toolchain.fleet.rollout.controller import Controller
    from toolchain.fleet.rollout.journal import Journal
    from toolchain.fleet.rollout.machine import RolloutState
    from toolchain.fleet.rollout.plan import build

    settings = BrokerSettings(port=env["broker"].port)
    plan = build({"fleet": fleet, "model": "tiny", **plan_data}, {}, where="benchmark")
    t0 = time.monotonic()
    with FleetClient(settings) as fc:
        views = fc.snapshot(fleet, settle_s=0.3)
    st = RolloutState(plan=plan, waves=assign_waves(plan, resolve_targets(plan, views)))
    journal = Journal(env["work"] / "journals", plan.id)
    journal.save(st)
    ctl = Controller(st, journal=journal, settings=settings, signer=env["signer"], operator_keys=env["keys"],
                     tick_s=0.1, say=lambda line: None)
    stop = threading.Event()
    if stop_when is not None:
        def watch():
            while not stop.is_set():
                if stop_when(ctl.st):
                    stop.set()
                time.sleep(0.05)
        threading.Thread(target=watch, daemon=True).start()
    timer = threading.Timer(timeout_s, stop.set)
    timer.daemon = True
    timer.start()
    end = ctl.run(stop, settle_s=0.5)
    stop.set()
    return end, time.monotonic() - t0, ctl
