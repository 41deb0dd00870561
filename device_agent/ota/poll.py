"""Hooking updates into a running agent: recover at start, then poll at an interval.

``edgeship-agent run`` starts it right after creating its ``Agent``::

    from device_agent.ota.poll import start_updates
    poller = start_updates(config, agent)   # recovers an interrupted update first
    ...
    poller.stop()                           # on shutdown

Polling checks the repository every ``[update] poll_interval_s`` for a release of the
active model newer than the installed one and runs the update in the background thread.
"""

from __future__ import annotations

import threading
from typing import Callable

from ..logs import get_logger
from .errors import UpdateError
from .events import UpdateEvent
from .updater import Updater

log = get_logger("update.poll")


class Poller:
    def __init__(self, updater: Updater, *, interval_s: float,
                 on_event: Callable[[UpdateEvent], None] | None = None) -> None:
        self.updater, self.interval_s, self.on_event = updater, interval_s, on_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Poller":
        self._thread = threading.Thread(target=self._loop, name="edgeship-update-poll", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.updater.cancel()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def poll_once(self) -> None:
        active = self.updater.store.active()
        if active is None:
            return
        try:
            cand = self.updater.check(active.name)
        except UpdateError as e:
            log.error("update.check_failed", model=active.name, reason=e.reason.value, error=str(e))
            return
        if cand is not None:
            log.info("update.available", model=active.name, release=cand.release)
            self.updater.update(active.name, release=cand.release, on_event=self.on_event)

    def _loop(self) -> None:
        try:
            self.updater.recover(on_event=self.on_event)
        except UpdateError as e:
            log.error("update.recover_failed", reason=e.reason.value, error=str(e))
        if self.interval_s <= 0:
            return
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except UpdateError as e:  # busy, or a failure outside the machine; try next time
                log.error("update.poll_failed", reason=e.reason.value, error=str(e))


def start_updates(config, agent, *, on_event: Callable[[UpdateEvent], None] | None = None) -> Poller:
    """Recover an interrupted update, then poll when ``[update] poll_interval_s`` > 0."""
    up = Updater(config, agent.store, agent)
    return Poller(up, interval_s=up.cfg.poll_interval_s, on_event=on_event).start()
