"""The sustained-alarm rule: a score must stay over its threshold for ``sustain`` checks in a
row to raise an alarm, and under it for ``sustain`` checks in a row to clear it.

Pure: :func:`step` takes a state and one check's verdict and returns the next state and the
transition (``raised``, ``cleared`` or None). One noisy check never alarms; an alarm is
raised once per episode, not at every check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Transition(str, enum.Enum):
    RAISED = "raised"
    CLEARED = "cleared"


@dataclass(frozen=True)
class AlarmState:
    active: bool = False
    over: int = 0   # consecutive checks over the threshold
    under: int = 0  # consecutive checks at or under it


def step(state: AlarmState, over: bool, *, sustain: int) -> tuple[AlarmState, Transition | None]:
    """The state after one check whose score was ``over`` its threshold (or not).

    Raises:
        ValueError: ``sustain`` < 1.
    """
    if sustain < 1:
        raise ValueError(f"sustain must be >= 1, got {sustain}")
    if over:
        s = AlarmState(active=state.active, over=state.over + 1, under=0)
        if not s.active and s.over >= sustain:
            return AlarmState(active=True, over=s.over, under=0), Transition.RAISED
        return s, None
    s = AlarmState(active=state.active, over=0, under=state.under + 1)
    if s.active and s.under >= sustain:
        return AlarmState(active=False, over=0, under=s.under), Transition.CLEARED
    return s, None
