"""systemd's notify protocol (sd_notify), without a dependency: one datagram to $NOTIFY_SOCKET.

With ``Type=notify`` systemd considers the agent started only when it sends ``READY=1``
(after the model is loaded and the HTTP socket listens), and with ``WatchdogSec=`` it
restarts the agent when ``WATCHDOG=1`` stops coming for that long: the agent sends it from
its serving loop (uvicorn's tick), so a hung event loop stops the pings. ``STOPPING=1``
announces a shutdown. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.

The socket is a Unix datagram socket, a path or an abstract name written with a leading
``@`` (sd_notify(3)); the message is newline-separated ``KEY=value`` assignments.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

from .logs import get_logger

log = get_logger("systemd")


def notify(message: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not under systemd.

    A failure to send is logged, never raised: the service manager's bookkeeping must not
    stop the agent from serving.
    """
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("systemd.notify_failed", message=message.split("\n", 1)[0], error=str(e))
        return False
    return True


def watchdog_interval_s(*, env: Mapping[str, str] | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC`` (as sd_watchdog_enabled(3)
    advises), or None when systemd asks for no watchdog or asks another process."""
    e = os.environ if env is None else env
    try:
        usec = int(e.get("WATCHDOG_USEC", "0"))
        pid = int(e.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2e6


class Watchdog:
    """Pings systemd's watchdog at most every ``interval_s``; call :meth:`tick` from the loop."""

    def __init__(self, interval_s: float | None, clock=None) -> None:
        import time

        self.interval_s = interval_s
        self._clock = clock or time.monotonic
        self._last = float("-inf")

    def tick(self) -> None:
        if self.interval_s is None:
            return
        now = self._clock()
        if now - self._last >= self.interval_s:
            self._last = now
            notify("WATCHDOG=1")
