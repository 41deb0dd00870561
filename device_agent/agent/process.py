"""The agent process on its state dir: one at a time, and how tools find the running one.

While an agent runs, it holds an exclusive flock on ``<state_dir>/agent.lock`` (released by
the kernel however the process dies) and has written ``agent.json`` (``{pid, host, port}``,
:class:`runtime.contracts.control.AgentInfo`) and a fresh random ``control.token`` (0600)
(paths: :class:`runtime.contracts.statedir.StateDir`). ``edgeship-agent status``,
``rollback``, ``update`` and ``install`` find it with :func:`running_agent`; a local
``edgeship-agent update`` and ``install`` hold the lock themselves (:func:`instance_lock`)
while they change the store, so a starting agent refuses to share it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runtime.contracts.control import AgentInfo
from runtime.contracts.statedir import StateDir
from runtime.fsutil import atomic_write_bytes, atomic_write_json

from .errors import AlreadyRunningError


@dataclass(frozen=True)
class RunningAgent:
    info: AgentInfo
    token: str | None  # None: control.token is not readable by this user (or control is off)

    @property
    def pid(self) -> int:
        return self.info.pid

    @property
    def url(self) -> str:
        return self.info.url


def running_agent(state_dir: str | os.PathLike) -> RunningAgent | None:
    """The agent serving ``state_dir``, or None when none holds its lock."""
    paths = StateDir(Path(state_dir))
    lock = paths.agent_lock
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: an agent is running
        else:
            return None
    finally:
        os.close(fd)
    try:
        info = AgentInfo.from_json(json.loads(paths.agent_info.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # starting up: the lock is held but agent.json is not written yet
    try:
        token = paths.control_token.read_text().strip()
    except OSError:  # no permission to read it (another user) or control disabled
        token = None
    return RunningAgent(info=info, token=token)


@contextmanager
def instance_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/agent.lock`` exclusively (an agent, or a local ``edgeship-agent update``).

    Raises:
        AlreadyRunningError: another process holds it.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(StateDir(root).agent_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError(f"{root}: another edgeship-agent is already running on this state dir "
                                      f"(an agent, or a local `edgeship-agent update`)") from None
        yield
    finally:
        os.close(fd)


def new_control_token(paths: StateDir) -> str:
    """Write a fresh random ``control.token`` (0600 from the start) and return it."""
    token = secrets.token_urlsafe(24)
    atomic_write_bytes(paths.control_token, token.encode(), mode=0o600)
    return token


def advertise(paths: StateDir, *, host: str, port: int) -> None:
    """Write ``agent.json``: from now on tools reach this process's control API."""
    atomic_write_json(paths.agent_info, AgentInfo(pid=os.getpid(), host=host, port=port).to_json())


def withdraw(paths: StateDir) -> None:
    """Remove ``agent.json`` and ``control.token`` (the process is stopping)."""
    for p in (paths.agent_info, paths.control_token):
        p.unlink(missing_ok=True)
