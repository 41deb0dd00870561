"""Fixtures every test folder shares: a real mosquitto broker on a free loopback port, and
the operator's keys (`edgeship keys init`: TUF roles + the operator key)."""

from __future__ import annotations

import pytest


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto started for the test, stopped after it."""
    from toolchain.fleet.localbroker import MOSQUITTO, Broker

    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (install the Debian package 'mosquitto'; `make test` does)")
    b = Broker(str(tmp_path / "broker")).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def operator_keys(tmp_path_factory):
    """A key directory made by `edgeship keys init`: its root.json is what the test devices
    trust, its operator key (``signer``) signs what the tests send."""
    from types import SimpleNamespace

    from toolchain.fleet.signer import OperatorSigner
    from toolchain.ota.keys import init_keys

    keys = tmp_path_factory.mktemp("operator") / "keys"
    root = init_keys(keys_dir=keys)
    return SimpleNamespace(dir=keys, root=root, signer=OperatorSigner.from_keys_dir(keys))
