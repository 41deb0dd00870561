"""What an update reports: one :class:`UpdateEvent` per state it enters, and its
:class:`UpdateResult` (both round-trip through JSON: the control route streams them, MQTT
carries them as deploy events)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Reason
from .states import State


@dataclass(frozen=True)
class UpdateEvent:
    deployment_id: str
    model: str
    release: int | None
    state: str
    reason_code: str | None
    detail: str
    ts: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class UpdateResult:
    deployment_id: str
    model: str
    release: int | None
    state: State
    reason: Reason
    detail: str
    sha256: str | None

    @property
    def ok(self) -> bool:
        return self.state is State.COMMIT

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "state": self.state.value, "reason": self.reason.value}
