"""The rollout controller process: the I/O shell around :mod:`.machine`.

One MQTT connection (clean session, resubscribed on every connect, so a broker restart
only delays it: the broker persists retained state, the devices queue their telemetry and
the journal knows what was sent) subscribes to the fleet's ``status``, ``reported``,
``desired``, ``deploy/+``, ``telemetry/metrics`` and ``telemetry/drift`` and to the
rollout's own topics under ``{prefix}/_rollouts/{fleet}/{id}/`` (not a fleet or device
name: those start with a letter or digit):

- ``claim`` (retained): ``{owner, host, pid, heartbeat_ms}`` of the controller running it.
  A second controller is refused while the claim is fresh (``claim_ttl_s``), besides the
  local lock of the journal; the connection's Last Will clears the claim, so a killed
  controller's successor starts at once.
- ``control`` (retained, operator-signed, ``runtime.contracts.mqtt.signing`` addressed to the
  rollout): pause, resume, abort, rollback from ``edgeship rollout ...``; applied once each
  (its version is journaled), also when it was sent while no controller ran.
- ``state`` (retained): the summary ``edgeship rollout status`` prints.

Every tick: feed the messages to the view, apply control messages, :func:`machine.step`,
journal (before publishing), publish the desired states (signed), the state document.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
import uuid
from typing import Any, Callable

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.signing import Addressee, OperatorKeys, Recipient, ReplayState, verify
from runtime.contracts.mqtt.topics import ROLLOUT_LEAVES, device_topics, fleet_filter, rollout_topic

from ..client import BrokerSettings
from ..errors import BrokerUnavailableError, RolloutClaimedError
from .journal import Journal
from .machine import TERMINAL, Assign, Clear, RolloutState, apply_action, step
from .observe import FleetView
from .status import summary

CONTROL_SCHEMA = "edgeship.rollout_control/1"
ACTIONS = ("pause", "resume", "abort", "rollback")


class Controller:
    def __init__(self, st: RolloutState, *, journal: Journal, settings: BrokerSettings, signer: Any,
                 operator_keys: OperatorKeys, tick_s: float = 0.2, claim_ttl_s: float = 30.0,
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.time) -> None:
        self.st, self.journal, self.settings, self.signer = st, journal, settings, signer
        self.keys, self.tick_s, self.claim_ttl_s, self.say, self.clock = operator_keys, tick_s, claim_ttl_s, say, clock
        p, plan = settings.prefix, st.plan
        self.topic = {leaf: rollout_topic(fleet=plan.fleet, rollout=plan.id, leaf=leaf, prefix=p)
                      for leaf in ROLLOUT_LEAVES}
        self.view = FleetView(prefix=p, fleet=plan.fleet, model=plan.model, release=plan.release,
                              deployments={st.deployment_id, st.rollback_id})
        self.view.targets = {d for w in st.waves for d in w}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.inbox: "queue.Queue" = queue.Queue()
        self.claim: dict | None = None
        self.connected = threading.Event()
        self._synced_at = 0.0
        self._last_state = ""
        self._last_beat = 0.0
        self._reconcile_at: float | None = None
        self.published = 0

    # ------------------------------------------------------------ MQTT
    def _connect(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        s = self.settings
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                        client_id=f"edgeship-rollout-{uuid.uuid4().hex[:12]}")
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        if s.tls:
            c.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        if s.username:
            c.username_pw_set(s.username, s.password)
        c.will_set(self.topic["claim"], b"", qos=1, retain=True)  # a dead controller releases its claim
        c.on_connect = self._on_connect
        c.on_message = lambda cl, u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.client = c
        try:
            c.connect(s.host, s.port, keepalive=10, clean_start=True)
        except OSError as e:
            raise BrokerUnavailableError(f"cannot connect to MQTT broker {s.host}:{s.port}: {e}") from e
        c.loop_start()
        if not self.connected.wait(10):
            raise BrokerUnavailableError(f"MQTT broker {s.host}:{s.port} did not accept the controller")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        p, f = self.settings.prefix, self.st.plan.fleet
        leaves = ("status", "reported", "desired", "deploy/+", "telemetry/metrics", "telemetry/drift")
        client.subscribe([(fleet_filter(fleet=f, leaf=leaf, prefix=p), 1) for leaf in leaves]
                         + [(self.topic["claim"], 1), (self.topic["control"], 1)])
        self._reconcile_at = time.monotonic() + 1.0  # after the retained state came in again
        self.connected.set()

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)
        self.published += 1

    # ------------------------------------------------------------ the claim
    def _check_claim(self, *, starting: bool) -> None:
        c = self.claim
        if not c or c.get("owner") == self.owner:
            return
        fresh = self.clock() * 1000 - (c.get("heartbeat_ms") or 0) < self.claim_ttl_s * 1000
        dead_here = c.get("host") == socket.gethostname() and not _pid_alive(c.get("pid"))
        if fresh and not dead_here:
            raise RolloutClaimedError(
                f"rollout {self.st.plan.id!r} is {'already ' if starting else 'now '}run by controller "
                f"{c.get('owner')} (claim on {self.topic['claim']}, heartbeat "
                f"{(self.clock() * 1000 - (c.get('heartbeat_ms') or 0)) / 1000:.0f} s ago)")

    def _beat(self) -> None:
        now = self.clock()
        doc = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
               "rollout": self.st.plan.id, "heartbeat_ms": int(now * 1000)}
        self._publish(self.topic["claim"], json.dumps(doc).encode(), retain=True)
        self._last_beat = now

    # ------------------------------------------------------------ inbound
    def _drain(self) -> None:
        while True:
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                return
            if topic == self.topic["claim"]:
                try:
                    self.claim = json.loads(payload) if payload else None
                except ValueError:
                    self.claim = None
            elif topic == self.topic["control"]:
                self._control(payload)
            else:
                self.view.feed(topic, payload)

    def _control(self, payload: bytes) -> None:
        if not payload:
            return
        st = self.st
        try:
            v = verify(json.loads(payload), keys=self.keys, leaf="control", schema=CONTROL_SCHEMA,
                       me=Recipient(st.plan.fleet, rollout=st.plan.id), now_ms=int(self.clock() * 1000),
                       replay=ReplayState(highest={}))
        except (PayloadRejected, ValueError) as e:
            self.say(f"control message refused: {e}")
            return
        action = v.body.get("action")
        if v.signed.version <= st.control_version or action not in ACTIONS:
            return
        st.control_version = v.signed.version
        self.say(f"operator: {action}")
        self._act(apply_action(st, self.view, action, int(self.clock() * 1000)))

    # ------------------------------------------------------------ outbound
    def _act(self, actions: list) -> None:
        if not actions:
            return
        self.journal.save(self.st)  # write-ahead: what is about to be published is on disk first
        fleet = self.st.plan.fleet
        for a in actions:
            t = device_topics(fleet=fleet, device=a.device, prefix=self.settings.prefix)
            if isinstance(a, Assign):
                self._publish(t.desired, self.signer.desired(a.desired, to=Addressee(fleet, device=a.device)),
                              retain=True)
            elif isinstance(a, Clear):
                self._publish(t.desired, b"", retain=True)

    def _reconcile(self) -> None:
        """Re-publish what the journal says was sent and the broker does not hold (a publish
        lost in a crash or a broker outage): same desired version, so a device that took it
        already ignores it."""
        from .machine import accepted

        st, out = self.st, []
        for d, a in st.assigned.items():
            held = self.view.obs(d).desired or {}
            if d in st.cleared:
                if held.get("deployment_id") == st.deployment_id:
                    out.append(Clear(d))
            elif d not in st.rollback and not accepted(st, d, self.view) and \
                    (held.get("deployment_id"), held.get("version")) != (st.deployment_id, a.version):
                out.append(Assign(d, _desired(st, d, a.version, st.deployment_id, st.plan.model, st.plan.release)))
        for d, a in st.rollback.items():
            held = self.view.obs(d).desired or {}
            src = st.assigned[d]
            if (held.get("deployment_id"), held.get("version")) != (st.rollback_id, a.version):
                out.append(Assign(d, _desired(st, d, a.version, st.rollback_id, src.from_model, src.from_release)))
        if out:
            self.say(f"reconciled {len(out)} device(s) whose retained desired state was not the journal's")
        self._act(out)

    def _publish_state(self, *, force: bool = False) -> None:
        doc = summary(self.st, self.view, int(self.clock() * 1000))
        key = json.dumps([doc["status"], doc["reason"], doc["wave"],
                          [(w["assigned"], w["committed"], w["failed"]) for w in doc["waves"]]])
        if force or key != self._last_state:
            self._publish(self.topic["state"], json.dumps(doc).encode(), retain=True)
            if key != self._last_state:
                self.say(_line(doc))
            self._last_state = key

    # ------------------------------------------------------------ the loop
    def run(self, stop: threading.Event | None = None, *, settle_s: float = 1.0) -> RolloutState:
        """Run until the rollout ends (or ``stop`` is set). Raises RolloutClaimedError,
        BrokerUnavailableError; the journal is left for a resume either way."""
        stop = stop or threading.Event()
        with self.journal.locked():
            self._connect()
            try:
                deadline = time.monotonic() + settle_s      # the retained state of the fleet and the claim
                while time.monotonic() < deadline:
                    self._drain()
                    time.sleep(0.05)
                self._check_claim(starting=True)
                self._beat()
                if not self.st.epoch_ms:
                    self.st.epoch_ms = int(self.clock() * 1000)
                self.view.reset_epoch(self.st.epoch_ms)
                self.journal.save(self.st)
                self._loop(stop)
            except RolloutClaimedError:
                self.client.disconnect()  # a clean disconnect: our Will must not clear their claim
                self.client.loop_stop()
                raise
            self._publish_state(force=True)
            self._publish(self.topic["claim"], b"", retain=True)
            time.sleep(0.2)
            self.client.disconnect()
            self.client.loop_stop()
        return self.st

    def _loop(self, stop: threading.Event) -> None:
        last_forced = 0.0
        while not stop.is_set():
            t0 = time.monotonic()
            self._drain()
            self._check_claim(starting=False)
            if self._reconcile_at is not None and t0 >= self._reconcile_at:
                self._reconcile_at = None
                self._reconcile()
            before = _signature(self.st)
            actions = step(self.st, self.view, int(self.clock() * 1000))
            if actions:
                self._act(actions)            # journals first
            elif _signature(self.st) != before:
                self.journal.save(self.st)
            if time.monotonic() - self._last_beat >= 5.0:
                self._beat()
            force = t0 - last_forced >= 2.0
            self._publish_state(force=force)
            if force:
                last_forced = t0
            if self.st.status in TERMINAL:
                self.journal.save(self.st)
                return
            stop.wait(max(0.0, self.tick_s - (time.monotonic() - t0)))


def _desired(st: RolloutState, device: str, version: int, dep: str, model: str | None, release: int | None):
    from runtime.contracts.mqtt.payloads import Desired

    return Desired(version=version, deployment_id=dep, model=model, release=release,
                   issued_at_ms=int(time.time() * 1000), issued_by=f"edgeship-rollout/{st.plan.id}")


def _signature(st: RolloutState) -> tuple:
    return (st.status, st.wave, len(st.assigned), len(st.results), len(st.rollback), len(st.cleared),
            len(st.breaches), len(st.settled_ms), st.reason,
            sum(r["state"] == "committed" for r in st.results.values()))


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _line(doc: dict) -> str:
    w = doc["waves"][doc["wave"] - 1] if doc["waves"] else {}
    return (f"{time.strftime('%H:%M:%S')} rollout {doc['id']} {doc['status']}: wave {doc['wave']}/{len(doc['waves'])} "
            f"{w.get('committed', 0)}/{w.get('size', 0)} committed, {w.get('failed', 0)} failed"
            + (f" - {doc['reason']}" if doc.get("reason") else ""))
