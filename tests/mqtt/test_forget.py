"""`edgeship fleet forget`: clears a device's retained topics on a real mosquitto broker."""

from __future__ import annotations

import json

import pytest

from toolchain.cli import main as edgeship

pytestmark = pytest.mark.mqtt

BASE = "edgeship/v1/f1"


def _broker(b):
    return ["--broker", f"127.0.0.1:{b.port}"]


def _retain(op, device, leaf, doc):
    op.publish(f"{BASE}/{device}/{leaf}", json.dumps(doc).encode(), retain=True)


def _status_devices(broker, capsys):
    capsys.readouterr()
    assert edgeship(["fleet", "status", "--fleet", "f1", "--json", *_broker(broker)]) == 0
    return {r["device"] for r in json.loads(capsys.readouterr().out)}


def test_forget_clears_ghost_rows_only_with_yes(broker, operator, capsys):
    _retain(operator, "old-cam", "status", {"online": False, "reason": "connection lost"})
    _retain(operator, "old-cam", "reported", {"applied_version": 3})
    _retain(operator, "old-cam", "desired", {"schema": "edgeship.desired/1", "version": 3})
    _retain(operator, "tpyo", "desired", {"schema": "edgeship.desired/1", "version": 1})   # misspelled push
    _retain(operator, "cam-1", "status", {"online": False, "reason": "shutdown"})
    assert _status_devices(broker, capsys) == {"old-cam", "tpyo", "cam-1"}

    rc = edgeship(["fleet", "forget", "--fleet", "f1", "--device", "old-cam", *_broker(broker)])
    out, err = capsys.readouterr()
    assert rc == 2 and "refusing without --yes" in err and f"{BASE}/old-cam/desired" in out
    assert _status_devices(broker, capsys) == {"old-cam", "tpyo", "cam-1"}   # nothing changed

    for dev in ("old-cam", "tpyo"):
        assert edgeship(["fleet", "forget", "--fleet", "f1", "--device", dev, "--yes", *_broker(broker)]) == 0
    out = capsys.readouterr().out
    assert all(f"{BASE}/old-cam/{leaf}" in out for leaf in ("status", "reported", "desired"))
    assert _status_devices(broker, capsys) == {"cam-1"}
    # the broker really dropped the retained copies: a fresh subscriber gets nothing for them
    from toolchain.fleet.client import BrokerSettings, FleetClient

    with FleetClient(BrokerSettings(port=broker.port)) as fc:
        assert fc.retained("f1", "old-cam") == {} and set(fc.retained("f1", "cam-1")) == {f"{BASE}/cam-1/status"}


def test_forget_refuses_online_device_unknown_device_and_bad_name(broker, operator, capsys):
    _retain(operator, "live", "status", {"online": True})
    rc = edgeship(["fleet", "forget", "--fleet", "f1", "--device", "live", "--yes", *_broker(broker)])
    assert rc == 1 and "reports itself online" in capsys.readouterr().err
    assert _status_devices(broker, capsys) == {"live"}
    assert edgeship(["fleet", "forget", "--fleet", "f1", "--device", "live", "--yes", "--force",
                     *_broker(broker)]) == 0
    assert _status_devices(broker, capsys) == set()

    rc = edgeship(["fleet", "forget", "--fleet", "f1", "--device", "nobody", "--yes", *_broker(broker)])
    assert rc == 1 and "nothing retained for device 'nobody'" in capsys.readouterr().err
    rc = edgeship(["fleet", "forget", "--fleet", "f1", "--device", "a/#", "--yes", *_broker(broker)])
    assert rc == 2 and "not a valid topic level" in capsys.readouterr().err
