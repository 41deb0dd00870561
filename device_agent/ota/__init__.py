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

_LAZY = ("Updater", "UpdateEvent", "UpdateResult")  # the updater pulls in TUF; the gate's child needs none


def __getattr__(name: str):
    if name in _LAZY:
        from . import updater

        return getattr(updater, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Updater", "UpdateEvent", "UpdateResult", "UpdateSection", "State", "Reason", "UpdateError"]
