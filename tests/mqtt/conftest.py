"""Fixtures for the MQTT tests: a real mosquitto broker, an operator-side observer client,
and simulators of the agent and the updater where the real ones are not needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from broker import MOSQUITTO, Broker  # noqa: E402

pytestmark = pytest.mark.mqtt


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (install the Debian package 'mosquitto'; `make test` does)")
    b = Broker(str(tmp_path / "broker")).start()
    yield b
    b.stop()
