"""The simulator's runner: many :class:`~.device.SimDevice` on a few MQTT connections.

Each connection (a paho-mqtt client with its own network thread) carries up to
``devices_per_connection`` devices and subscribes to exactly their operator topics, so
the broker routes as it would to real agents; one scheduler thread runs the devices'
timers (update steps, metrics windows, heartbeats, churn). Every message is a real MQTT 5
PUBLISH (QoS 1, retained where the catalogue says) built by the contracts' envelope.

What a shared connection cannot do: a Last Will per device. A device that leaves (churn,
``set_offline``) publishes its offline status itself and unsubscribes; one that returns
subscribes again, so the broker hands it the retained desired state, as after a reconnect.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import operator_filters, retained
from runtime.contracts.mqtt.payloads import Origin
from runtime.contracts.mqtt.signing import OperatorKeys
from runtime.contracts.mqtt.topics import DEFAULT_PREFIX, device_topics

from ..client import BrokerSettings
from ...errors import BadInputError
from ..errors import BrokerUnavailableError
from .behaviour import SimBehaviour
from .device import After, Publish, SimDevice


@dataclass
class SimStats:
    published: Counter = field(default_factory=Counter)   # by kind
    received: int = 0
    refused: int = 0
    connects: int = 0


class _Conn:
    def __init__(self, fleet: "SimFleet", index: int, names: list[str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.fleet, self.names = fleet, names
        s = fleet.settings
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"edgeship-sim-{fleet.fleet}-{index}-{id(self) % 10**6}")
        self.client.max_inflight_messages_set(2000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        if s.tls:
            self.client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        if s.username:
            self.client.username_pw_set(s.username, s.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()

    def start(self) -> None:
        s = self.fleet.settings
        try:
            self.client.connect(s.host, s.port, keepalive=30, clean_start=True)
        except OSError as e:
            raise BrokerUnavailableError(f"simulator cannot connect to {s.host}:{s.port}: {e}") from e
        self.client.loop_start()

    def subscribe(self, names: list[str]) -> None:
        subs = [(f"{self.fleet.topics[n].base}/{f}", 1) for n in names for f in operator_filters()]
        for i in range(0, len(subs), 400):
            self.client.subscribe(subs[i:i + 400])

    def unsubscribe(self, name: str) -> None:
        self.client.unsubscribe([f"{self.fleet.topics[name].base}/{f}" for f in operator_filters()])

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        self.fleet.stats.connects += 1
        with self.fleet.lock:
            online = [n for n in self.names if self.fleet.devices[n].online]
        self.subscribe(online)
        self.fleet.births(online)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        self.fleet.inbound(msg.topic, bytes(msg.payload), msg.properties)


class SimFleet:
    """``n`` simulated devices of ``fleet`` running ``model`` ``release``."""

    def __init__(self, *, n: int, fleet: str, settings: BrokerSettings, keys: OperatorKeys, model: str,
                 release: int, behaviour: SimBehaviour | None = None, devices_per_connection: int = 250,
                 name_format: str = "sim-{:04d}", clock: Callable[[], float] = time.time) -> None:
        if n < 1:
            raise BadInputError(f"--devices must be >= 1, got {n}")
        self.fleet, self.settings, self.behaviour = fleet, settings, behaviour or SimBehaviour()
        self.prefix = settings.prefix or DEFAULT_PREFIX
        self.clock = clock
        self.lock = threading.RLock()
        self.stats = SimStats()
        names = [name_format.format(i) for i in range(n)]
        b = self.behaviour
        self.devices = {d: SimDevice(name=d, fleet=fleet, behaviour=b, keys=keys, model=model, release=release,
                                     groups=b.groups_of(d), arch=b.arch_of(d), online=not b.starts_offline(d),
                                     clock=clock) for d in names}
        self.topics = {d: device_topics(fleet=fleet, device=d, prefix=self.prefix) for d in names}
        per = max(1, devices_per_connection)
        self.conns = [_Conn(self, i, names[j:j + per]) for i, j in enumerate(range(0, n, per))]
        self.conn_of = {d: c for c in self.conns for d in c.names}
        self._ids = {d: itertools.count(1) for d in names}
        self._seq = {d: itertools.count(0) for d in names}
        self._heap: list = []
        self._heap_lock = threading.Lock()
        self._tick = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeship-sim-scheduler", daemon=True)

    # ------------------------------------------------------------ lifecycle
    def start(self, *, timeout_s: float = 20.0) -> "SimFleet":
        """Connect, publish every device's retained state, start timers. Raises BrokerUnavailableError."""
        for d in self.devices.values():
            d.clock = self.clock
        self._thread.start()
        for c in self.conns:
            c.start()
        deadline = time.monotonic() + timeout_s
        for c in self.conns:
            if not c.connected.wait(max(0.1, deadline - time.monotonic())):
                raise BrokerUnavailableError(f"simulator: {self.settings.host}:{self.settings.port} did not accept "
                                             f"the connection within {timeout_s}s")
        with self.lock:
            offline = [n for n, d in self.devices.items() if not d.online]
        for n in offline:  # known to the fleet from before, offline now
            dev = self.devices[n]
            self._apply(n, [dev.reported(), dev.death("connection lost")])
        b = self.behaviour
        for n in self.devices:
            self.later(b.metrics_interval_s * (0.2 + 0.8 * b.u(n, "phase")), lambda n=n: self._metrics(n))
            self.later(b.heartbeat_s * (0.5 + 0.5 * b.u(n, "beat")), lambda n=n: self._heartbeat(n))
        if b.churn_per_min > 0:
            self.later(1.0, self._churn)
        return self

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Every online device says offline (a clean stop), then the connections close."""
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        infos = []
        with self.lock:
            for n, d in self.devices.items():
                if d.online:
                    infos.append(self._publish(n, d.death("shutdown")))
                    d.online = False
        deadline = time.monotonic() + timeout_s
        for info in infos:
            try:
                info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        for c in self.conns:
            c.client.disconnect()
            c.client.loop_stop()

    # ------------------------------------------------------------ devices coming and going
    def set_offline(self, name: str) -> None:
        with self.lock:
            dev = self.devices[name]
            if not dev.online:
                return
            dev.online = False
            self._apply(name, [dev.death("connection lost")])
        self.conn_of[name].unsubscribe(name)

    def set_online(self, name: str) -> None:
        with self.lock:
            dev = self.devices[name]
            if dev.online:
                return
            dev.online = True
            self._apply(name, dev.birth())
        self.conn_of[name].subscribe([name])   # the broker hands it the retained desired state

    def births(self, names: list[str]) -> None:
        with self.lock:
            for n in names:
                self._seq[n] = itertools.count(0)
                self._apply(n, self.devices[n].birth())

    # ------------------------------------------------------------ messages
    def inbound(self, topic: str, raw: bytes, properties: Any) -> None:
        parts = topic[len(self.prefix) + 1:].split("/", 2)
        if len(parts) != 3 or parts[1] not in self.devices:
            return
        name, leaf = parts[1], parts[2]
        with self.lock:
            dev = self.devices[name]
            if not dev.online:
                return
            self.stats.received += 1
            before = dev.refused
            effects = dev.receive(leaf, raw, properties)
            self.stats.refused += dev.refused - before
            self._apply(name, effects)

    def _publish(self, name: str, p: Publish):
        dev = self.devices[name]
        t = self.topics[name]
        origin = Origin(fleet=self.fleet, device=name, boot_id=dev.boot_id, msg_id=next(self._ids[name]),
                        ts_ms=int(self.clock() * 1000), mono_ms=int(time.monotonic() * 1000))
        raw = payloads.stamp(payloads.encode(payloads.envelope(p.kind, origin, p.body)),
                             seq=next(self._seq[name]), hist=False)
        topic = p.topic if p.topic and t.is_response_topic(p.topic) else f"{t.base}/{p.leaf}"
        props = None
        if p.properties is not None and getattr(p.properties, "CorrelationData", None) is not None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = p.properties.CorrelationData
        self.stats.published[p.kind.value] += 1
        return self.conn_of[name].client.publish(topic, raw, qos=1, retain=retained(p.kind), properties=props)

    def _apply(self, name: str, effects: list) -> None:
        for e in effects:
            if isinstance(e, Publish):
                self._publish(name, e)
            elif isinstance(e, After):
                self.later(e.delay_s, lambda e=e, name=name: self._run_device(name, e.fn))

    def _run_device(self, name: str, fn: Callable[[], list]) -> None:
        with self.lock:
            self._apply(name, fn())

    # ------------------------------------------------------------ timers
    def later(self, delay_s: float, fn: Callable[[], None]) -> None:
        with self._heap_lock:
            heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._tick), fn))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            due = []
            with self._heap_lock:
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for fn in due:
                try:
                    fn()
                except Exception:  # one device's bug must not stop the fleet
                    import logging

                    logging.getLogger("edgeship.sim").exception("simulated device timer failed")
            with self._heap_lock:
                wait = (self._heap[0][0] - time.monotonic()) if self._heap else 0.5
            self._wake.wait(max(0.0, min(wait, 0.5)))
            self._wake.clear()

    def _metrics(self, name: str) -> None:
        b = self.behaviour
        with self.lock:
            dev = self.devices[name]
            if dev.online:
                self._apply(name, dev.metrics(b.metrics_interval_s))
        self.later(b.metrics_interval_s, lambda: self._metrics(name))

    def _heartbeat(self, name: str) -> None:
        with self.lock:
            dev = self.devices[name]
            if dev.online:
                self._apply(name, [dev.reported()])
        self.later(self.behaviour.heartbeat_s, lambda: self._heartbeat(name))

    def _churn(self) -> None:
        b = self.behaviour
        with self.lock:
            leaving = [n for n, d in self.devices.items() if d.online and b.u(n, f"churn/{time.monotonic():.0f}")
                       < b.churn_per_min / 60.0]
        for n in leaving:
            self.set_offline(n)
            self.later(b.away_s, lambda n=n: self.set_online(n))
        self.later(1.0, self._churn)

    # ------------------------------------------------------------ what the fleet looks like
    def summary(self) -> dict[str, Any]:
        with self.lock:
            by_release = Counter(d.release for d in self.devices.values())
            online = sum(d.online for d in self.devices.values())
            busy = sum(d.running is not None for d in self.devices.values())
        return {"devices": len(self.devices), "online": online, "updating": busy,
                "by_release": dict(sorted(by_release.items())), "published": sum(self.stats.published.values()),
                "published_by_kind": dict(self.stats.published), "received": self.stats.received,
                "refused": self.stats.refused, "connections": len(self.conns)}
