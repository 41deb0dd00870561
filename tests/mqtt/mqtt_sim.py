"""Simulators of the agent and the updater implementing the interfaces of docs/design.md
(Agent.status/rollback/add_request_observer/infer; Updater.update/cancel with UpdateEvents),
for control-plane tests that do not need a real model. Tests that need the real thing use
device_agent.agent.Agent / device_agent.ota.Updater."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class SimEvent:
    deployment_id: str
    model: str
    release: int
    state: str
    reason_code: str | None
    detail: str
    ts: float


@dataclass
class SimResult:
    state: str
    reason_code: str | None
    detail: str = ""


class SimAgent:
    def __init__(self, name: str = "demo", release: int = 1) -> None:
        self._observers = []
        self.active = {"name": name, "release": release, "sha256": f"sha-{release}", "version": f"1.0.{release}"}
        self.previous = None
        self.lock = threading.Lock()

    def add_request_observer(self, fn) -> None:
        self._observers.append(fn)

    def infer(self, feeds, model=None):
        t0 = time.perf_counter()
        out = {"y": sum(feeds.get("x", [0]))}
        for fn in self._observers:
            fn(self.active["sha256"], True, time.perf_counter() - t0)
        return out

    def status(self) -> dict:
        with self.lock:
            return {"agent_version": "0.1.0", "engines": ["onnxruntime"], "active": dict(self.active),
                    "previous": dict(self.previous) if self.previous else None, "ready": True}

    def switch(self, name: str, release: int) -> None:
        with self.lock:
            self.previous = self.active
            self.active = {"name": name, "release": release, "sha256": f"sha-{release}", "version": f"1.0.{release}"}

    def rollback(self):
        with self.lock:
            if self.previous is None:
                raise RuntimeError("no previous model to roll back to")
            self.active, self.previous = self.previous, self.active
            return self.active


class SimUpdater:
    """Walks the update states; ``fail`` maps a release to (state, reason_code) to fail at."""

    STATES = ("fetch", "verify", "stage", "gate", "switch", "trial", "commit")

    def __init__(self, agent: SimAgent, *, step_s: float = 0.01, fail: dict | None = None) -> None:
        self.agent = agent
        self.step_s = step_s
        self.fail = fail or {}
        self.calls: list[tuple[str, int, str]] = []
        self._cancel = threading.Event()

    def cancel(self) -> bool:
        self._cancel.set()
        return True

    def update(self, model, release=None, deployment_id=None, on_event=None, *, authority=None):
        self.calls.append((model, release, deployment_id))
        self.authority = authority
        self._cancel.clear()
        emit = lambda s, code=None, d="": on_event and on_event(  # noqa: E731
            SimEvent(deployment_id, model, release, s, code, d, time.time()))
        fail_at = self.fail.get(release)
        for state in self.STATES:
            if self._cancel.is_set() and state in ("fetch", "verify", "stage", "gate", "switch"):
                emit("aborted", "cancelled", "cancelled by operator")
                return SimResult("aborted", "cancelled", "cancelled by operator")
            if fail_at and fail_at[0] == state:
                final = "rolled_back" if state == "trial" else "failed"
                emit(final, fail_at[1], f"{state} failed")
                return SimResult(final, fail_at[1], f"{state} failed")
            if state == "switch":
                self.agent.switch(model, release)
            emit(state)
            time.sleep(self.step_s)
        return SimResult("commit", None, "")
