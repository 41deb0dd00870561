"""Fixtures for the MQTT tests: a real mosquitto broker, an operator-side observer client,
and simulators of the agent and the updater where the real ones are not needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_helpers import wait_for  # noqa: E402,F401  (re-exported for the fixtures)


@pytest.fixture
def operator(broker, operator_keys):
    from toolchain.fleet.client import BrokerSettings, FleetClient

    with FleetClient(BrokerSettings(port=broker.port), signer=operator_keys.signer) as fc:
        yield fc


@pytest.fixture
def make_device(tmp_path, broker, operator_keys):
    """Start the telemetry service for an agent/updater; stopped at teardown. The device
    trusts ``operator_keys`` unless ``operator_root=`` says otherwise."""
    from device_agent.mqtt import MqttConfig, start

    started = []

    def make(agent, updater=None, *, device="d1", fleet="f1", **cfg):
        qdir = cfg.pop("queue_dir", str(tmp_path / f"q-{device}"))
        cfg.setdefault("operator_root", str(operator_keys.root))
        config = MqttConfig(fleet=fleet, device_id=device, port=broker.port, queue_dir=qdir,
                            reconnect_min_s=1, reconnect_max_s=2, **cfg)
        svc = start(config, agent, updater)
        assert svc.link.wait_connected(10), "agent did not connect to the test broker"
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if not svc._stop.is_set():
            svc.stop(timeout_s=1)


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory):
    """Real bundles of a tiny ONNX model: releases 1 and 2 (different weights)."""
    from toolchain.demo_ota import make_tiny_bundle

    work = tmp_path_factory.mktemp("mqtt-bundles")
    return {1: make_tiny_bundle(work, release=1, scale=1.0), 2: make_tiny_bundle(work, release=2, scale=2.0)}


@pytest.fixture
def agent_state(tmp_path, tiny_bundles):
    """A state dir with release 1 installed and active (device_agent.store.Store)."""
    from device_agent.store import Store

    state = tmp_path / "state"
    store = Store(state)
    ref = store.install_bundle(tiny_bundles[1].path)
    store.activate(ref.sha256)
    return state
