"""The persisted update journal (atomic JSON) and the kill-at-a-state test hook.

``update/journal.json`` holds the current (or last) update's :class:`~.states.Journal`.
It is replaced atomically (temp file, fsync, rename, fsync dir) *before* the updater acts
on a state, so after a crash the file names the state whose work may be half done.

Fault injection for crash tests: ``EDGESHIP_UPDATE_FAULT=kill:<state>:<enter|leave>[:once|:always]``
SIGKILLs the process right after ``<state>`` is persisted (enter) or just before the next
state is written (leave). ``once`` (the default) fires a single time per update directory.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from runtime.contracts.statedir import StateDir
from runtime.fsutil import atomic_write_json

from .errors import UpdateStateError
from .states import Journal

FAULT_ENV = "EDGESHIP_UPDATE_FAULT"


class JournalFile:
    def __init__(self, paths: StateDir) -> None:
        self.dir = paths.update
        self.path = paths.journal
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> Journal | None:
        """The journal on disk, or None.

        Raises:
            UpdateStateError: the file exists but cannot be parsed.
        """
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Journal.from_json(json.loads(raw))
        except (json.JSONDecodeError, TypeError) as e:
            raise UpdateStateError(f"{self.path}: unreadable update journal: {e}") from e

    def save(self, j: Journal, *, previous: Journal | None = None, entering: bool = True) -> None:
        """Persist ``j``. ``entering``: this write starts (or restarts) the work of ``j.state``."""
        if previous is not None and previous.state is not j.state:
            fault_point(previous.state.value, "leave", self.dir)
        atomic_write_json(self.path, j.to_json())
        if entering:
            fault_point(j.state.value, "enter", self.dir)


def fault_point(state: str, position: str, update_dir: Path) -> None:
    """Test hook: SIGKILL this process at ``state``/``position`` when the env var asks for it."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if len(parts) < 3 or parts[0] != "kill" or parts[1] != state or parts[2] != position:
        return
    mode = parts[3] if len(parts) > 3 else "once"
    marker = update_dir / f"fault.{state}.{position}.fired"
    if mode == "once":
        if marker.exists():
            return
        marker.write_text("1")
        fd = os.open(marker, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
