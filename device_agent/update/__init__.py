"""Signed OTA model updates: TUF-verified fetch, a gate, a trial window, automatic rollback.

``Updater(config, store, agent).update(model, release=None)`` runs one update through the
state machine of :mod:`.states` (fetch -> verify -> stage -> gate -> switch -> trial ->
commit, or rolled_back / failed / aborted with a reason code); ``recover()`` finishes or
undoes one a crash interrupted. Errors: :mod:`.errors`. Polling: :mod:`.poll`.
"""

from __future__ import annotations

from .config import UpdateSection
from .errors import Reason, UpdateError
from .states import State
from .updater import UpdateEvent, UpdateResult, Updater

__all__ = ["Updater", "UpdateEvent", "UpdateResult", "UpdateSection", "State", "Reason", "UpdateError"]
