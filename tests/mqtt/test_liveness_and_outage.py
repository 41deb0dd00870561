"""Real agent processes and a real broker: Last Will after kill -9; no loss across a broker outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mqtt_helpers import wait_for
from runtime.contracts.mqtt.topics import device_topics
import pytest

pytestmark = pytest.mark.mqtt

ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_makes_retained_status_offline(broker, operator, tmp_path, tiny_bundles):
    """`edgeship-agent install` + `edgeship-agent run` with an [mqtt] section, then SIGKILL."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "device_agent.cli", "install", "--bundle", str(tiny_bundles[1].path),
                    "--prefix", str(prefix), "--port", "0"], env=env, check=True, capture_output=True)
    config = prefix / "etc" / "edgeship" / "agent.toml"
    with open(config, "a") as f:
        f.write(f'\n[mqtt]\nfleet = "f1"\ndevice_id = "dev9"\nport = {broker.port}\nmetrics_interval_s = 0.5\n')
    proc = subprocess.Popen([sys.executable, "-m", "device_agent.cli", "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        online = wait_for(lambda: (v := operator.snapshot("f1", settle_s=0.3).get("dev9")) and v.status
                          and v.status["online"] and v, timeout_s=30)
        assert online.status["active"]["name"] == "tiny" and online.status["active"]["release"] == 1
        conn = online.status["conn"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        view = wait_for(lambda: (v := operator.snapshot("f1", settle_s=0.3).get("dev9")) and v.status
                        and v.status["online"] is False and v, timeout_s=15)
        assert view.status["reason"] == "connection lost" and view.status["conn"] == conn
        assert view.status["device"] == "dev9" and "msg_id" in view.status
    finally:
        if proc.poll() is None:
            proc.kill()


def test_broker_outage_loses_nothing_and_serving_continues(broker, make_device, agent_state):
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from runtime.contracts.mqtt.payloads import Severity
    from toolchain.fleet.localbroker import Recorder, record_enqueued

    agent = Agent(AgentConfig.for_state_dir(agent_state))
    rec = Recorder(broker.port, "edgeship/v1/f1/dev1/#", client_id="outage-recorder")
    svc = make_device(agent, device="dev1", metrics_interval_s=0.2)
    produced = record_enqueued(svc.link)
    stop = threading.Event()
    failures, served, emitted = [], [0], []

    def serve():
        x = np.ones((1, 4), dtype=np.float32)
        while not stop.is_set():
            try:
                agent.infer({"x": x})
                served[0] += 1
            except Exception as e:  # any failure is counted and fails the test
                failures.append(repr(e))
            time.sleep(0.005)

    def emit():
        while not stop.is_set():
            svc.emit_event(category="test", severity=Severity.INFO, reason_code="tick", detail="steady")
            time.sleep(0.01)

    threads = [threading.Thread(target=serve), threading.Thread(target=emit)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(rec.ids()) > 20, timeout_s=20)  # delivering live before the outage
        broker.stop()
        wait_for(lambda: not svc.link.connected, timeout_s=10)
        served_before = served[0]
        # the positive signals of an outage: serving goes on and the durable queue fills
        wait_for(lambda: served[0] > served_before + 100 and svc.queue.stats().depth > 100, timeout_s=30)
        depth_during = svc.queue.stats().depth
        broker.start()
        wait_for(lambda: svc.link.connected, timeout_s=20)
        produced_at_reconnect = len(produced)
        wait_for(lambda: len(produced) > produced_at_reconnect + 50, timeout_s=20)  # and live traffic after it
    finally:
        stop.set()
        for t in threads:
            t.join()
    wait_for(lambda: svc.queue.stats().depth == 0, timeout_s=30)
    t = device_topics(fleet="f1", device="dev1")
    # every message the device queued is now at the consumer, each id once after de-duplication
    wait_for(lambda: produced <= rec.ids(), timeout_s=30)
    assert len(produced) > 300
    assert depth_during > 100, depth_during
    assert failures == []
    assert rec.hist > 0                                 # replayed messages are flagged
    topics = {d["topic"] for d in rec.by_id.values()}
    assert t.events in topics and t.metrics in topics
    rec.close()


def test_messages_queued_offline_survive_an_agent_restart(broker, make_device, tmp_path):
    from runtime.contracts.mqtt.payloads import Severity
    from mqtt_sim import SimAgent
    from toolchain.fleet.localbroker import Recorder

    rec = Recorder(broker.port, "edgeship/v1/f1/d1/events", client_id="restart-recorder")
    svc = make_device(SimAgent(), queue_dir=str(tmp_path / "q"))
    broker.stop()
    wait_for(lambda: not svc.link.connected)
    for i in range(20):
        svc.emit_event(category="test", severity=Severity.INFO, reason_code="offline", detail=str(i))
    assert svc.queue.stats().depth == 20
    svc.stop(timeout_s=0.5)                      # the agent goes away with 20 messages on disk
    broker.start()
    svc2 = make_device(SimAgent(), queue_dir=str(tmp_path / "q"))
    wait_for(lambda: len(rec.ids()) >= 20 and svc2.queue.stats().depth == 0, timeout_s=20)
    docs = sorted(rec.by_id.values(), key=lambda d: d["msg_id"])
    assert [d["detail"] for d in docs] == [str(i) for i in range(20)]
    assert all(d["hist"] for d in docs) and svc2.queue.next_msg_id() > docs[-1]["msg_id"]
    rec.close()


def test_qos1_publish_while_disconnected_is_tracked_to_its_puback(broker):
    """The paho behaviour the link relies on: a QoS 1 message published with no connection is
    kept and sent after connecting; _queued_ok makes its completion observable."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from device_agent.mqtt.link import _queued_ok
    from toolchain.fleet.localbroker import Recorder

    rec = Recorder(broker.port, "t/#")
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="offline-pub", protocol=mqtt.MQTTv5)
    info = c.publish("t/x", b'{"msg_id": 1}', qos=1)
    assert info.rc == mqtt.MQTT_ERR_NO_CONN
    info = _queued_ok(info)
    assert info.is_published() is False                         # no exception, just not yet
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        wait_for(info.is_published)
        wait_for(lambda: rec.ids() == {1})
    finally:
        c.disconnect()
        c.loop_stop()
        rec.close()


def test_broker_unreachable_is_logged_once_per_outage(broker, tmp_path):
    """A broker that is down (or a wrong [mqtt] host/port) at start: one warning naming it, not silence."""
    import logging

    from device_agent.mqtt import MqttConfig, start
    from device_agent.mqtt import link as link_mod
    from mqtt_sim import SimAgent

    port = broker.port
    broker.stop()
    records: list[logging.LogRecord] = []
    h = logging.Handler(level=logging.DEBUG)
    h.emit = records.append
    link_mod.log.addHandler(h)
    old_level = link_mod.log.level
    link_mod.log.setLevel(logging.DEBUG)
    try:
        svc = start(MqttConfig(fleet="f1", device_id="d1", port=port, queue_dir=str(tmp_path / "q"),
                               reconnect_min_s=1, reconnect_max_s=1), SimAgent(), None)
        wait_for(lambda: svc.link._connect_failures >= 2, timeout_s=15)
        warned = [r.getMessage() for r in records if r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]
        assert len(warned) == 1 and f"127.0.0.1:{port}" in warned[0], warned
        broker.start()
        assert svc.link.wait_connected(15) and svc.link._connect_failures == 0
        svc.stop(timeout_s=1)
    finally:
        link_mod.log.removeHandler(h)
        link_mod.log.setLevel(old_level)
