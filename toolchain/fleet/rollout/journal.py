"""The controller's journal: everything it decided, on disk before it acts on it.

``<journal_dir>/<rollout id>/journal.json`` (replaced atomically: temp, fsync, rename) holds
the plan, the waves, every assignment (the desired version each device was given), every
result, the rollbacks and clears, the breaches and the status. It is written *before* the
desired states it records are published, so a controller killed at any point resumes from
it without assigning a device twice (the same version again is a no-op on a device that
took it) and without losing a wave; what devices did meanwhile comes from their retained
``reported`` state. ``<journal_dir>/<id>/lock`` is flocked while a controller runs.

Default directory: ``$EDGESHIP_ROLLOUTS``, else ``~/.local/state/edgeship/rollouts``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from runtime.fsutil import atomic_write_json

from ..errors import RolloutClaimedError, RolloutNotFoundError
from .machine import Assignment, RolloutState, Status
from .plan import RolloutPlan


def default_dir() -> Path:
    env = os.environ.get("EDGESHIP_ROLLOUTS")
    return Path(env) if env else Path.home() / ".local" / "state" / "edgeship" / "rollouts"


def to_json(st: RolloutState) -> dict:
    return {"schema_version": 1, "plan": st.plan.to_json(), "waves": st.waves, "status": st.status.value,
            "wave": st.wave, "started_ms": {str(k): v for k, v in st.started_ms.items()},
            "settled_ms": {str(k): v for k, v in st.settled_ms.items()},
            "assigned": {d: asdict(a) for d, a in st.assigned.items()}, "results": st.results,
            "rollback": {d: asdict(a) for d, a in st.rollback.items()}, "cleared": st.cleared,
            "breaches": st.breaches, "epoch_ms": st.epoch_ms, "control_version": st.control_version,
            "reason": st.reason, "verdicts": st.verdicts}


def from_json(d: dict) -> RolloutState:
    """Raises ValueError/KeyError/TypeError on a journal this version cannot read."""
    if d.get("schema_version") != 1:
        raise ValueError(f"journal schema {d.get('schema_version')!r} is not 1")
    return RolloutState(
        plan=RolloutPlan.from_json(d["plan"]), waves=[list(w) for w in d["waves"]], status=Status(d["status"]),
        wave=int(d["wave"]), started_ms={int(k): v for k, v in d["started_ms"].items()},
        settled_ms={int(k): v for k, v in d["settled_ms"].items()},
        assigned={k: Assignment(**v) for k, v in d["assigned"].items()}, results=dict(d["results"]),
        rollback={k: Assignment(**v) for k, v in d["rollback"].items()}, cleared=list(d["cleared"]),
        breaches=list(d["breaches"]), epoch_ms=int(d["epoch_ms"]), control_version=int(d["control_version"]),
        reason=d.get("reason", ""), verdicts=d.get("verdicts") or {})


class Journal:
    def __init__(self, root: str | os.PathLike, rollout_id: str) -> None:
        self.dir = Path(root) / rollout_id
        self.path = self.dir / "journal.json"

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, st: RolloutState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, to_json(st))

    def load(self) -> RolloutState:
        """Raises RolloutNotFoundError: no journal (or an unreadable one, named)."""
        try:
            return from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            raise RolloutNotFoundError(f"no journal of rollout {self.dir.name!r} in {self.dir.parent} "
                                       f"(pass the --journal-dir it was started with)") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RolloutNotFoundError(f"{self.path}: unreadable journal: {e}") from e

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the rollout's lock. Raises RolloutClaimedError: a controller on this machine holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RolloutClaimedError(f"another controller on this machine runs rollout {self.dir.name!r} "
                                          f"(it holds {self.dir / 'lock'})") from None
            yield
        finally:
            os.close(fd)
