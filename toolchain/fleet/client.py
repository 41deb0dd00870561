"""Operator-side MQTT client: read the retained fleet state, write desired state, send
commands (MQTT 5 Response Topic + Correlation Data + Message Expiry) and follow events.

paho-mqtt is imported inside the functions (CLI stays light). The client uses a clean
session and a random client id: it relies only on retained topics and live subscriptions.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from runtime.contracts.mqtt.messages import Kind, retained
from runtime.contracts.mqtt.payloads import Desired
from runtime.contracts.mqtt.signing import Addressee
from runtime.contracts.mqtt.topics import DEFAULT_PREFIX, device_topics, fleet_filter, split_device_topic

from .errors import BrokerUnavailableError, FleetError


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Any = None

    def json(self) -> Any:
        try:
            return json.loads(self.payload.decode()) if self.payload else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None


@dataclass
class DeviceView:
    """What the retained topics say about one device."""

    device: str
    status: dict | None = None
    reported: dict | None = None
    desired: dict | None = None
    extra: dict = field(default_factory=dict)


class FleetClient:
    """A connected operator client. Use as a context manager.

    ``signer`` (a :class:`~.signer.OperatorSigner`) signs desired state and commands; without
    one the client can read the fleet but not steer it."""

    def __init__(self, settings: BrokerSettings, *, connect_timeout_s: float = 5.0, signer: Any = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.settings = settings
        self.signer = signer
        self._inbox: "queue.Queue[Received]" = queue.Queue()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                   client_id=f"edgeship-operator-{uuid.uuid4().hex[:12]}",
                                   protocol=mqtt.MQTTv5)
        if settings.tls:
            self._client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.on_connect = self._on_connect
        self._client.on_message = lambda c, u, m: self._inbox.put(
            Received(m.topic, bytes(m.payload), bool(m.retain), m.properties))
        self._client.max_inflight_messages_set(100)
        try:
            self._client.connect(settings.host, settings.port, keepalive=30, clean_start=True)
        except OSError as e:
            raise BrokerUnavailableError(
                f"cannot connect to MQTT broker {settings.host}:{settings.port}: {e}") from e
        self._client.loop_start()
        if not self._connected.wait(connect_timeout_s) or self._refused:
            self.close()
            raise BrokerUnavailableError(
                f"MQTT broker {settings.host}:{settings.port} did not accept the connection"
                + (f": {self._refused}" if self._refused else f" within {connect_timeout_s}s"))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        self._connected.set()

    def __enter__(self) -> "FleetClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # ------------------------------------------------------------ subscriptions
    def subscribe(self, *filters: str, timeout_s: float = 5.0) -> None:
        """Subscribe (QoS 1) and wait for the SUBACK, so nothing published after returns is missed."""
        done = threading.Event()
        self._client.on_subscribe = lambda *a: done.set()
        rc, _ = self._client.subscribe([(f, 1) for f in filters])
        if rc != 0 or not done.wait(timeout_s):
            raise BrokerUnavailableError(f"subscribe to {filters} failed (rc={rc})")

    def messages(self, *, timeout_s: float, idle_s: float | None = None) -> Iterator[Received]:
        """Yield received messages until ``timeout_s`` passes (or ``idle_s`` without one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait = min(left, idle_s if idle_s is not None else 1.0)
            try:
                yield self._inbox.get(timeout=wait)
            except queue.Empty:
                if idle_s is not None and wait >= idle_s:
                    return

    # ------------------------------------------------------------ fleet state
    def snapshot(self, fleet: str, *, settle_s: float = 0.5, timeout_s: float = 5.0) -> dict[str, DeviceView]:
        """Every device with a retained status/reported/desired document in ``fleet``."""
        p = self.settings.prefix
        self.subscribe(*(fleet_filter(fleet=fleet, leaf=leaf, prefix=p) for leaf in ("status", "reported", "desired")))
        views: dict[str, DeviceView] = {}
        for msg in self.messages(timeout_s=timeout_s, idle_s=settle_s):
            parts = split_device_topic(msg.topic, prefix=p)
            if parts is None or not msg.retain:
                continue
            _, device, leaf = parts
            view = views.setdefault(device, DeviceView(device))
            if leaf in ("status", "reported", "desired"):
                setattr(view, leaf, msg.json())
        return views

    def retained(self, fleet: str, device: str, *, settle_s: float = 0.5,
                 timeout_s: float = 5.0) -> dict[str, Received]:
        """Every retained message under one device's topic subtree, by topic."""
        t = device_topics(fleet=fleet, device=device, prefix=self.settings.prefix)
        self.subscribe(f"{t.base}/#")
        found: dict[str, Received] = {}
        for msg in self.messages(timeout_s=timeout_s, idle_s=settle_s):
            if msg.retain and msg.payload and msg.topic.startswith(t.base + "/"):
                found[msg.topic] = msg
        return found

    def clear_retained(self, topics: list[str]) -> None:
        """Delete retained messages: an empty retained publish removes the topic's retained copy."""
        for topic in topics:
            self.publish(topic, b"", retain=True)

    def publish(self, topic: str, payload: bytes, *, retain: bool, properties: Any = None,
                timeout_s: float = 5.0) -> None:
        """Publish QoS 1 and wait for the broker's acknowledgement."""
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        try:
            info.wait_for_publish(timeout=timeout_s)
            published = info.is_published()
        except (RuntimeError, ValueError) as e:
            raise BrokerUnavailableError(f"publishing {topic} failed: {e}") from e
        if not published:
            raise BrokerUnavailableError(f"broker did not acknowledge {topic} within {timeout_s}s")

    def _signer(self):
        if self.signer is None:
            raise FleetError("desired state and commands are signed with the operator key: pass --keys DIR "
                             "(the key directory of `edgeship keys init`)")
        return self.signer

    def publish_desired(self, fleet: str, device: str, desired: Desired) -> None:
        """Write ``desired`` (signed for ``fleet/device``) on the device's retained desired topic."""
        t = device_topics(fleet=fleet, device=device, prefix=self.settings.prefix)
        raw = self._signer().desired(desired, to=Addressee(fleet, device=device))
        self.publish(t.desired, raw, retain=retained(Kind.DESIRED))

    def command(self, fleet: str, device: str, name: str, body: dict | None = None, *,
                timeout_s: float = 10.0, expiry_s: int = 60) -> dict:
        """Send ``cmd/{name}`` (signed; ``body`` as bytes goes out as is, for tests of bad input)
        and wait for the correlated response.

        Raises:
            FleetError: no response within ``timeout_s`` (the command expires at the broker
                after ``expiry_s``, so a device that comes back later does not run it).
        """
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        t = device_topics(fleet=fleet, device=device, prefix=self.settings.prefix)
        token = uuid.uuid4().hex
        resp_topic = f"{t.cmd_response(name)}/{token[:12]}"
        self.subscribe(resp_topic)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = resp_topic
        props.CorrelationData = token.encode()
        props.MessageExpiryInterval = expiry_s
        raw = body if isinstance(body, bytes) else self._signer().command(
            name, body or {}, to=Addressee(fleet, device=device), expires_s=max(expiry_s, 1))
        self.publish(t.cmd(name), raw, retain=retained(Kind.CMD), properties=props)
        others = []
        try:
            for msg in self.messages(timeout_s=timeout_s):
                corr = getattr(msg.properties, "CorrelationData", None)
                if msg.topic == resp_topic and corr == token.encode():
                    return msg.json() or {}
                others.append(msg)
        finally:  # keep what arrived meanwhile for the caller's next messages()
            for msg in others:
                self._inbox.put(msg)
        raise FleetError(f"no response to {name} from {fleet}/{device} within {timeout_s}s "
                         f"(is the device online? the command expires in {expiry_s}s)")
