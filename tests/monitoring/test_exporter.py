"""`edgeship fleet exporter` against a real mosquitto: per-device and per-release series from
real payloads, malformed telemetry counted and skipped, bounded memory and stale expiry."""

from __future__ import annotations

import time
import urllib.request

import pytest

from promserver import promtool_check

from toolchain.fleet.client import BrokerSettings
from toolchain.fleet.exporter import Exporter
from toolchain.fleet.synthetic import SyntheticFleet


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample starting {prefix!r}")


def _wait_scrape(port: int, pred, timeout_s=20.0) -> str:
    """Scrape until ``pred(text)`` holds; returns that text."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = _scrape(port)
        try:
            if pred(text):
                return text
        except AssertionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out; last scrape:\n{text[-3000:]}")


def test_rollout_states_are_parsed_from_their_topic_and_malformed_rollout_topics_ignored():
    from runtime.contracts.mqtt.topics import rollout_topic
    from toolchain.fleet.fleetstate import FleetState

    st = FleetState()
    doc = b'{"schema":"edgeship.rollout/1","wave":1,"waves":[{"wave":1}],"status":"running"}'
    st.feed(rollout_topic(fleet="f1", rollout="r-1", leaf="state"), doc, 1.0)
    assert st.rollouts[("f1", "r-1")][0]["status"] == "running" and st.messages["rollout"] == 1
    # the other leaves, too many or too few levels: ignored, and never taken for a device's status
    for topic in (rollout_topic(fleet="f1", rollout="r-1", leaf="claim"), "edgeship/v1/_rollouts/f1/status",
                  "edgeship/v1/_rollouts/f1/r-1/x/state"):
        st.feed(topic, b'{"schema":"edgeship.status/1","online":true}', 2.0)
    assert st.messages == {"status": 0, "metrics": 0, "drift": 0, "desired": 0, "rollout": 1}
    assert not st.devices and list(st.rollouts) == [("f1", "r-1")]
    st.feed(rollout_topic(fleet="f1", rollout="r-1", leaf="state"), b"", 3.0)   # cleared retained state
    assert not st.rollouts


def test_per_device_and_per_release_series_and_malformed_telemetry(broker):
    exp = Exporter(BrokerSettings(port=broker.port), fleets=["sim"], host="127.0.0.1", port=0,
                   stale_after_s=60, max_devices=100)
    sim = SyntheticFleet(broker.port, n=20, release=2, new_share=0.25)
    try:
        sim.birth()
        sim.metrics_round(error_rate=0.1)
        sim.drift_round(devices=sim.devices[:5], psi=0.4, alarm=True)
        sim.garbage("dev-00003", 8)
        sim.client.publish("edgeship/v1/_rollouts/sim/r-9/state", b'{"schema":"edgeship.rollout/1"}', qos=1)
        sim.flush()
        text = _wait_scrape(exp.port, lambda t: 'edgeship_fleet_exporter_malformed_total{kind="metrics"} 8.0' in t
                            and _value(t, 'edgeship_fleet_exporter_messages_total{kind="metrics"}') == 28
                            and _value(t, 'edgeship_fleet_device_drift_alarms{device="dev-00004",fleet="sim"}') == 1)
        assert _value(text, 'edgeship_fleet_exporter_malformed_total{kind="rollout"}') == 1
        code, out = promtool_check(text.encode())
        assert code == 0, out
        assert _value(text, "edgeship_fleet_exporter_devices") == 20
        assert _value(text, 'edgeship_fleet_device_online{device="dev-00000",fleet="sim"}') == 1
        assert 'edgeship_fleet_device_info{device="dev-00000",fleet="sim",model="digits",release="2",' in text
        assert _value(text, 'edgeship_fleet_release_devices{fleet="sim",model="digits",release="2"}') == 5
        assert _value(text, 'edgeship_fleet_release_devices{fleet="sim",model="digits",release="1"}') == 15
        assert _value(text, 'edgeship_fleet_release_error_ratio{fleet="sim",model="digits",release="1"}') == \
            pytest.approx(0.1, abs=0.02)
        assert _value(text, 'edgeship_fleet_release_drift_psi_max{fleet="sim",model="digits",release="2"}') == 0.4
        assert _value(text, 'edgeship_fleet_device_drift_alarms{device="dev-00004",fleet="sim"}') == 1
        assert 'edgeship_fleet_device_latency_seconds{device="dev-00003",fleet="sim",percentile="p95"}' in text
        # the device that also sent garbage still has its good window
        assert _value(text, 'edgeship_fleet_device_requests_total{device="dev-00003",fleet="sim"}') > 0
    finally:
        sim.close()
        exp.stop()


def test_devices_that_go_silent_expire_and_the_device_count_is_bounded(broker):
    exp = Exporter(BrokerSettings(port=broker.port), fleets=None, host="127.0.0.1", port=0,
                   stale_after_s=2.0, max_devices=12)
    sim = SyntheticFleet(broker.port, n=20)
    try:
        sim.metrics_round()
        sim.flush()
        text = _wait_scrape(exp.port, lambda t: _value(t, "edgeship_fleet_exporter_refused_total") == 8)
        assert _value(text, "edgeship_fleet_exporter_devices") == 12
        for _ in range(8):  # only the first four keep talking
            sim.metrics_round(devices=sim.devices[:4])
            time.sleep(0.5)
        text = _wait_scrape(exp.port, lambda t: _value(t, "edgeship_fleet_exporter_devices") == 4)
        assert _value(text, "edgeship_fleet_exporter_expired_total") == 8
        assert 'device="dev-00011"' not in text and 'device="dev-00003"' in text
    finally:
        sim.close()
        exp.stop()
