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


class LogCapture:
    """Log records of one logger (from any thread) while the ``with`` block runs: a positive
    signal that the service handled a message it does not answer on the wire."""

    def __init__(self, name: str = "edgeship.telemetry") -> None:
        import logging

        self._logger = logging.getLogger(name)
        self._handler = logging.Handler(level=logging.DEBUG)
        self._handler.emit = self._emit  # type: ignore[method-assign]
        self._messages: list[str] = []
        self._old_level = self._logger.level

    def _emit(self, record) -> None:
        self._messages.append(record.getMessage())

    def messages(self) -> list[str]:
        return list(self._messages)

    def __enter__(self) -> "LogCapture":
        import logging

        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._old_level)
