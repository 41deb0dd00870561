"""A real mosquitto broker on a free loopback port, for the demo, tests and benchmarks.

Persistence is on (in the broker's temp dir) so a consumer's session and queued messages
survive a broker stop/start, and ``max_queued_messages`` is raised so a burst replayed to a
slower consumer is not dropped by the broker (mosquitto's default is 1000).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: str | None = None, *, port: int | None = None, auth_conf: str = "") -> None:
        """``auth_conf``: extra config lines (password_file, acl_file); without them the
        broker allows anonymous clients (loopback only)."""
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto not found: install the Debian package 'mosquitto' (make system-deps)")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="edgeship-mosq-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # started as root, mosquitto drops to user "mosquitto", which cannot read our
            # temp dir (persistence, log, password file); stay the invoking user instead
            + ("user root\n" if os.geteuid() == 0 else "")
            + (auth_conf if auth_conf else "allow_anonymous true\n") +
            f"persistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 1000000\nmax_inflight_messages 100\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.log}\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()} {self.log.read_text() if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s}s")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Recorder:
    """A consumer with a persistent MQTT 5 session (survives a broker restart when the broker
    persists sessions) that records every message under ``topic_filter`` and counts
    duplicates by ``msg_id``. For benchmarks and tests of the no-loss guarantee."""

    def __init__(self, port: int, topic_filter: str, *, host: str = "127.0.0.1", client_id: str | None = None) -> None:
        import threading
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.filter = topic_filter
        self.lock = threading.Lock()
        self.by_id: dict[int, dict] = {}
        self.duplicates = 0
        self.received = 0
        self.hist = 0
        self.subscribed = threading.Event()
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"recorder-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=10, clean_start=False, properties=props)
        self._client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("recorder could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not flags.session_present:
            client.subscribe(self.filter, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        import json

        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        now = time.monotonic()
        with self.lock:
            self.received += 1
            self.first_ts = self.first_ts or now
            self.last_ts = now
            mid = doc.get("msg_id")
            if mid in self.by_id:
                self.duplicates += 1
                return
            self.by_id[mid] = {"topic": msg.topic, **doc}
            self.hist += bool(doc.get("hist"))

    def ids(self) -> set[int]:
        with self.lock:
            return set(self.by_id)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def record_enqueued(link) -> set[int]:
    """Wrap ``link.enqueue`` (a device's MQTT link) so the id of every message the device
    produces is also added to the returned set; the no-loss check compares it with
    :meth:`Recorder.ids`. For benchmarks and tests."""
    produced: set[int] = set()
    enqueue = link.enqueue

    def recording_enqueue(*a, **kw):
        mid = enqueue(*a, **kw)
        produced.add(mid)
        return mid

    link.enqueue = recording_enqueue
    return produced
