"""The MQTT link of the agent: one paho-mqtt 2.x client (callback API v2, MQTT 5), the Last
Will, and a sender thread that drains the durable queue.

Delivery rule: a message is published only after the transaction that holds it committed
(:meth:`MqttLink.enqueue` returns then, see queue.py for what "queued" guarantees), and it
is removed from disk only after the broker acknowledged it (QoS 1 PUBACK, reported by paho's
``on_publish`` for the packet id the sender recorded). Acknowledged rows are deleted in
batches (one transaction per ``_ACK_BATCH`` rows or ``_ACK_DELAY_S``): a crash before that
only re-sends them. Messages the sender handed to paho stay on disk until then; paho re-sends
un-acknowledged QoS 1 messages itself after a reconnect, and after an agent restart the
sender starts over from the oldest row, so a message may arrive twice (deduplicate by
``msg_id``) but is never lost while it is within its class budget.

The sender publishes each committed batch from memory (the queue's window on its newest
commits, tail.py) and reads SQLite only for a backlog (after an outage or a restart), ahead
in chunks.

Messages created before the current connection came up are *historical*: they are stamped
``hist: true`` and replayed at most ``replay_max_per_s`` per second, so a long outage does not
flood the broker. Live messages are not rate limited. ``seq`` starts at 0 with the birth
message of every connection.

The link never blocks the caller on the network: :meth:`enqueue` commits to SQLite and returns;
inference keeps serving while the broker is away; paho reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import Kind, operator_filters, retained
from runtime.contracts.mqtt.payloads import Origin
from runtime.contracts.mqtt.topics import DeviceTopics, device_topics

from .config import MqttConfig, check_secret_file
from .queue import DurableQueue, MessageClass
from .errors import QueueError
from .outbox import QueuedMessage, read_boot_id

log = logging.getLogger("edgeship.telemetry")

__all__ = ["MqttLink", "LinkCounters", "read_boot_id"]

#: acknowledged rows are deleted once this many are pending, or after _ACK_DELAY_S
_ACK_BATCH = 256
_ACK_DELAY_S = 0.05
#: paho's rc for a QoS 1 message it keeps: MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN (sent once
#: connected; see _queued_ok). Plain ints: paho is imported only when telemetry starts.
_ACCEPTED = (0, 4)


@dataclass
class LinkCounters:
    published: int = 0
    acked: int = 0
    broker_rejected: int = 0
    connects: int = 0


class _TokenBucket:
    """``rate_per_s`` on average, bursts of at most a tenth of a second's worth."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self.burst = max(1.0, rate_per_s / 10.0)
        self.tokens = self.burst
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class MqttLink:
    """Owns the paho client, the Will, the per-connection ``seq`` and the queue sender."""

    def __init__(self, *, config: MqttConfig, queue: DurableQueue,
                 on_connected: Callable[[int], None],
                 on_message: Callable[[Any], None],
                 will_body: Callable[[int], Mapping[str, Any]]) -> None:
        self.config = config
        self.queue = queue
        self.topics: DeviceTopics = device_topics(fleet=config.fleet, device=config.device_id,
                                                  prefix=config.topic_prefix)
        self.boot_id = queue.boot_id
        self._encoder = payloads.EnvelopeEncoder(fleet=config.fleet, device=config.device_id, boot_id=self.boot_id)
        self.counters = LinkCounters()
        self._on_connected = on_connected
        self._on_message = on_message
        self._will_body = will_body
        self._seq_lock = threading.Lock()
        self._seq = 0
        self._conn = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()      # SUBACK of the operator topics on this connection
        self._connected_since_ms = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pubacks: deque[tuple[int, bool]] = deque()   # (mid, rejected) from paho's thread
        self._puback_wake = max(1, config.max_inflight // 4)  # wake the sender for this many
        self._inflight: dict[int, QueuedMessage] = {}   # paho mid -> row, sender thread only
        self._to_delete: list[QueuedMessage] = []      # acknowledged, not yet deleted (sender only)
        self._delete_due = 0.0
        self._connect_failures = 0                   # failed connects since the last success (log once)
        self._client = self._make_client()
        self._sender = threading.Thread(target=self._send_loop, name="edgeship-mqtt-sender", daemon=True)

    # ------------------------------------------------------------ setup
    def _make_client(self):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        c = self.config
        for path, what in ((c.key_file, "[mqtt] key_file"), (c.password_file, "[mqtt] password_file")):
            if path:
                check_secret_file(path, what)
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=f"edgeship-{c.fleet}-{c.device_id}", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(c.max_inflight)
        client.reconnect_delay_set(min_delay=c.reconnect_min_s, max_delay=c.reconnect_max_s)
        if c.tls:
            client.tls_set(ca_certs=c.ca_file or None, certfile=c.cert_file or None,
                           keyfile=c.key_file or None)
        if c.username:
            password = None
            if c.password_file:
                with open(c.password_file, encoding="utf-8") as f:
                    password = f.read().strip()
            client.username_pw_set(c.username, password)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = self._handle_message
        return client

    def origin(self) -> Origin:
        return Origin(fleet=self.config.fleet, device=self.config.device_id, boot_id=self.boot_id,
                      msg_id=self.queue.next_msg_id(), ts_ms=int(time.time() * 1000),
                      mono_ms=int(time.monotonic() * 1000))

    def _set_will(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if self.config.will_delay_s:
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = self.config.will_delay_s
        doc = payloads.envelope(Kind.STATUS, self.origin(), self._will_body(self._conn + 1))
        self._client.will_set(self.topics.status, payloads.stamp(payloads.encode(doc), seq=0, hist=False),
                              qos=1, retain=retained(Kind.STATUS), properties=props)

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start the sender."""
        from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        clean: Any = True
        if self.config.session_expiry_s:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.config.session_expiry_s
            clean = MQTT_CLEAN_START_FIRST_ONLY
        self._set_will()
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s,
                                   clean_start=clean, properties=props)
        self._client.loop_start()
        self._sender.start()

    def stop(self, *, offline_body: Mapping[str, Any] | None, timeout_s: float = 3.0) -> None:
        """Publish ``offline_body`` on status (a clean death does not fire the Will), flush what
        the broker can still acknowledge within ``timeout_s``, and disconnect."""
        deadline = time.monotonic() + timeout_s
        if offline_body is not None and self.connected:
            info = self.publish_direct(self.topics.status, Kind.STATUS, offline_body)
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except RuntimeError:  # the connection dropped meanwhile: the Will says offline instead
                log.info("offline status not acknowledged; the broker publishes the Will")
        while self.connected and time.monotonic() < deadline and self._inflight:
            self._wake.set()
            time.sleep(0.02)
        self._stopping.set()
        self._wake.set()
        if self._sender.is_alive():
            self._sender.join(timeout=2)  # it deletes what was acknowledged before it ends
        self._client.disconnect()
        self._client.loop_stop()

    # ------------------------------------------------------------ publishing
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connection_number(self) -> int:
        """How many connections this link has made (1 for the first; the ``conn`` of status)."""
        return self._conn

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until connected and subscribed to the operator topics (what is sent to the
        device from then on reaches it). False on timeout."""
        deadline = time.monotonic() + timeout_s
        return self._connected.wait(timeout_s) and self._subscribed.wait(max(0.0, deadline - time.monotonic()))

    def _next_seq(self) -> int:
        with self._seq_lock:
            value = self._seq
            self._seq += 1
            return value

    def publish_direct(self, topic: str, kind: Kind, body: Mapping[str, Any], *, properties: Any = None):
        """Publish now, not through the disk queue (retained state, command responses),
        retained when the catalogue (runtime.contracts.mqtt.messages) says ``kind`` is.
        Returns paho's MQTTMessageInfo. While disconnected paho keeps it in memory."""
        doc = payloads.envelope(kind, self.origin(), body)
        raw = payloads.stamp(payloads.encode(doc), seq=self._next_seq(), hist=False)
        return _queued_ok(self._client.publish(topic, raw, qos=1, retain=retained(kind), properties=properties))

    def enqueue(self, cls: MessageClass, topic: str, kind: Kind, body: Mapping[str, Any]) -> int:
        """Store a message durably for delivery; returns its msg_id once it is *queued*: its
        row committed (queue.py states what that guarantees). Concurrent callers share one
        transaction (group commit). Never touches the network.

        Raises:
            QueueError: the queue cannot be written; the message is not queued.
            ValueError: ``body`` overrides an envelope field.
        """
        row = self.queue.append(self._builder(cls, topic, kind, body))
        self._wake.set()
        return row.msg_id

    def enqueue_many(self, messages: Iterable[tuple[MessageClass, str, Kind, Mapping[str, Any]]]) -> list[int]:
        """:meth:`enqueue` for several ``(cls, topic, kind, body)`` at once: one transaction,
        all or nothing; returns their msg_ids once all are queued.

        Raises:
            QueueError: the queue cannot be written; none of them is queued.
            ValueError: a body overrides an envelope field (nothing is queued).
        """
        rows = self.queue.append_many([self._builder(*m) for m in messages])
        self._wake.set()
        return [r.msg_id for r in rows]

    def stage(self, cls: MessageClass, topic: str, kind: Kind, body: Mapping[str, Any]) -> int:
        """:meth:`enqueue` without waiting for the commit, for high-rate telemetry: returns the
        msg_id of a message *accepted*, not yet queued. The sender commits staged messages
        before it publishes anything (woken by this call), this call commits itself once the
        queue's ``max_staged`` messages wait, and :meth:`flush` commits and waits; a kill -9
        before that commit loses the message (queue.py states the guarantee).

        Raises:
            QueueError: this call had to commit and the commit failed.
            ValueError: ``body`` overrides an envelope field.
        """
        row = self.queue.stage(self._builder(cls, topic, kind, body))
        self._wake.set()
        return row.msg_id

    def flush(self) -> None:
        """Return once every message staged before the call is queued (committed).

        Raises:
            QueueError: the commit of the newest of them failed.
        """
        self.queue.flush()

    def _builder(self, cls: MessageClass, topic: str, kind: Kind,
                 body: Mapping[str, Any]) -> Callable[[int], QueuedMessage]:
        encode, boot_id = self._encoder.encode, self.boot_id

        def build(msg_id: int) -> QueuedMessage:  # encoded once, with the id the queue allocated
            mono_ms = int(time.monotonic() * 1000)
            text = encode(kind, msg_id=msg_id, ts_ms=int(time.time() * 1000), mono_ms=mono_ms, body=body)
            return QueuedMessage(msg_id, cls, topic, text, boot_id, mono_ms)
        return build

    # ------------------------------------------------------------ paho callbacks (network thread)
    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connect refused by %s:%s: %s", self.config.host, self.config.port, reason_code)
            return
        with self._seq_lock:
            self._seq = 0
            self._conn += 1
            conn = self._conn
        self.counters.connects += 1
        self._connect_failures = 0
        self._connected_since_ms = int(time.monotonic() * 1000)
        self._subscribed.clear()
        client.subscribe([(f"{self.topics.base}/{f}", 1) for f in operator_filters()])
        self._connected.set()
        log.info("mqtt connected to %s:%s (connection %d)", self.config.host, self.config.port, conn)
        try:
            self._on_connected(conn)
        except Exception:  # a failing birth must not kill paho's network thread
            log.exception("publishing the birth message failed")
        self._wake.set()

    def _handle_connect_fail(self, client, userdata) -> None:
        """TCP/TLS connect failed (broker down, wrong host/port): say so once per outage."""
        self._connect_failures += 1
        if self._connect_failures == 1:
            log.warning("mqtt cannot connect to %s:%s (broker down, unreachable, or wrong [mqtt] host/port); "
                        "retrying with backoff, telemetry is queued on disk and inference is not affected",
                        self.config.host, self.config.port)
        else:
            log.debug("mqtt connect to %s:%s failed again (%d in a row)", self.config.host, self.config.port,
                      self._connect_failures)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("mqtt disconnected (%s); reconnecting with backoff", reason_code)
            self._set_will()  # the next connection carries a Will with its own conn/msg_id

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._pubacks.append((mid, reason_code.is_failure))
        if len(self._pubacks) >= self._puback_wake:  # the sender also polls every 50 ms
            self._wake.set()

    def _handle_message(self, client, userdata, message) -> None:
        try:
            self._on_message(message)
        except Exception:
            log.exception("handling %s failed", message.topic)

    # ------------------------------------------------------------ sender thread
    def _settle(self, *, flush: bool = False) -> None:
        """Take the PUBACKs paho reported; delete their rows in one batch when due."""
        while self._pubacks:
            mid, rejected = self._pubacks.popleft()
            m = self._inflight.pop(mid, None)
            if m is None:
                continue  # a direct publish (status, reported, a command response)
            if rejected:  # the broker refused it (e.g. ACL): deleted, counted, not re-sent
                self.counters.broker_rejected += 1
            if not self._to_delete:
                self._delete_due = time.monotonic() + _ACK_DELAY_S
            self._to_delete.append(m)
        if self._to_delete and (flush or len(self._to_delete) >= _ACK_BATCH
                                or time.monotonic() >= self._delete_due):
            done, self._to_delete = self._to_delete, []
            try:
                self.queue.ack_rows(done)
            except QueueError:
                self._to_delete = done + self._to_delete  # tried again next round (after a pause)
                raise
            self.counters.acked += len(done)

    def _send_loop(self) -> None:
        cursor = 0
        bucket = _TokenBucket(self.config.replay_max_per_s)
        while not self._stopping.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._settle()
                self._commit_staged()  # nothing is published before it is queued
                if not self.connected:
                    continue
                room = self.config.max_inflight - len(self._inflight)
                if room > 0:
                    cursor = self._publish_batch(self.queue.next_batch(after_id=cursor, limit=room), cursor, bucket)
            except Exception:
                log.exception("telemetry sender error; retrying")
                time.sleep(0.5)
        self._commit_staged()
        self._settle(flush=True)

    def _commit_staged(self) -> None:
        try:
            self.queue.flush()
        except QueueError:  # the stage() callers have returned: the log and the count say it
            log.exception("telemetry queue commit failed; staged messages lost")

    def _publish_batch(self, batch: list[QueuedMessage], cursor: int, bucket: _TokenBucket) -> int:
        """Hand ``batch`` to paho in order; returns the new cursor (the last id handed over).
        What it does not hand over goes back to the queue for the next round."""
        for i, m in enumerate(batch):
            hist = m.boot_id != self.boot_id or m.mono_ms < self._connected_since_ms
            if hist and not bucket.take():  # replay budget spent; the 50 ms wait refills it
                self.queue.unread(batch[i:], after_id=cursor)
                break
            info = self._client.publish(m.topic, payloads.stamp(m.body, seq=self._next_seq(), hist=hist), qos=1)
            if info.rc not in _ACCEPTED:  # not kept by paho (packet id clash): sent again
                log.warning("message %d not accepted by the client (rc %s); re-sending", m.msg_id, info.rc)
                self.queue.unread(batch[i:], after_id=cursor)
                break
            self._inflight[info.mid] = m
            self.counters.published += 1
            cursor = m.msg_id
        return cursor

    def inflight_count(self) -> int:
        return len(self._inflight)


def _queued_ok(info):
    """paho returns rc=MQTT_ERR_NO_CONN for a QoS 1 message published while the connection is
    down, yet keeps it and sends it after the reconnect; left as is, that rc makes
    ``is_published()`` raise forever. Mark it as queued so completion is tracked normally."""
    from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

    if info.rc == MQTT_ERR_NO_CONN:
        info.rc = MQTT_ERR_SUCCESS
    return info
