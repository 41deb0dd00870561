"""Helpers shared by the MQTT tests (a module name no other test directory uses)."""

from __future__ import annotations


def wait_for(pred, timeout_s=10.0, interval_s=0.05):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")
