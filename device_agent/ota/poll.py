"""Hooking updates into a running agent: recover at start, then poll at an interval.

``edgeship-agent run`` starts it right after creating its ``Agent``::

    from device_agent.ota.poll import start_updates
    poller = start_updates(config, agent)   # recovers an interrupted update first
    ...
    poller.stop()                           # on shutdown

Polling checks the repository every ``[update] poll_interval_s`` for a release of the
active model above the newest one this device ran and runs the update in the background
thread. A release in the penalty box (its gate or trial failed here: ``releases.py``) is
skipped: the first skip of each is logged and passed to ``on_skip`` (the MQTT service turns
it into an ``events`` message), later ones only count (``skips`` in the device's reported
penalty box). Each attempt is an update with a ``poll-…`` deployment id whose events go to
``on_event`` (MQTT ``deploy/{id}``).
"""

from __future__ import annotations

import threading
import uuid
from typing import Callable

from ..logs import get_logger
from .errors import UpdateError
from .events import UpdateEvent
from .releases import Penalty
from .updater import Updater

log = get_logger("update.poll")


class Poller:
    def __init__(self, updater: Updater, *, interval_s: float,
                 on_event: Callable[[UpdateEvent], None] | None = None,
                 on_skip: Callable[[str, Penalty], None] | None = None) -> None:
        self.updater, self.interval_s, self.on_event, self.on_skip = updater, interval_s, on_event, on_skip
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
            cand, skipped = self.updater.poll_check(active.name)
        except UpdateError as e:
            log.error("update.check_failed", model=active.name, reason=e.reason.value, error=str(e))
            return
        for p in skipped:
            before = self.updater.releases.note_skip(active.name, p.sha256)
            if not before.announced:  # said once per boxed release; later skips are counted
                log.warning("update.skipped_penalty_box", model=active.name, release=p.release, reason=p.reason,
                            sha256=p.sha256)
                if self.on_skip is not None:
                    self.on_skip(active.name, before)
        if cand is not None:
            log.info("update.available", model=active.name, release=cand.release)
            self.updater.update(active.name, release=cand.release, deployment_id=f"poll-{uuid.uuid4().hex[:10]}",
                                on_event=self.on_event)

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


def start_updates(config, agent, *, updater: Updater | None = None,
                  on_event: Callable[[UpdateEvent], None] | None = None,
                  on_skip: Callable[[str, Penalty], None] | None = None) -> Poller:
    """Recover an interrupted update, then poll when ``[update] poll_interval_s`` > 0
    (with ``updater``, or a new one on the agent's store)."""
    up = updater if updater is not None else Updater(config, agent.store, agent)
    return Poller(up, interval_s=up.cfg.poll_interval_s, on_event=on_event, on_skip=on_skip).start()
