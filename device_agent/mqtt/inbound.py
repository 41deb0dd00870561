"""The door of the control plane: every operator message is checked here before it acts.

The broker is not trusted. A message on any topic the catalogue says the operator sends
(``runtime.contracts.mqtt.messages.operator_specs``: ``desired``, ``cmd/{name}``, and any
row added later) must be signed by an operator key this device trusts, for this topic, for
this device (or one of its groups), unexpired, with a version above the newest accepted
from that key on that topic (``runtime.contracts.mqtt.signing.verify``). The replay state
is persisted *before* the message acts, so a crash cannot make it act twice.

A refusal never affects serving; it is reported by the caller as an ``events`` message
through a :class:`RefusalLimiter`, so a flood of forgeries cannot fill the device's queue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.messages import MessageSpec, Sender, match_leaf
from runtime.contracts.mqtt.payloads import load_object
from runtime.contracts.mqtt.signing import (
    Recipient, ReplayState, UnknownOperatorKeyError, Verified, verify,
)

from .errors import TelemetryError
from .trust import OperatorTrust, ReplayStore


class RefusalLimiter:
    """A token bucket for refusal events: ``burst`` at once, then ``per_min`` a minute; what
    it holds back is counted and reported with the next event that goes out."""

    def __init__(self, *, per_min: float, burst: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = per_min / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        """``(emit, suppressed)``: whether to report this refusal, and how many were held back
        since the last one reported (reset when ``emit``)."""
        with self._lock:
            now = self._clock()
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate_per_s)
            self._last = now
            if self.tokens < 1.0:
                self.suppressed += 1
                return False, self.suppressed
            self.tokens -= 1.0
            held, self.suppressed = self.suppressed, 0
            return True, held


@dataclass(frozen=True)
class Admitted:
    """An operator message that passed the door."""

    spec: MessageSpec
    levels: Mapping[str, str]
    verified: Verified

    @property
    def body(self) -> dict[str, Any]:
        return dict(self.verified.body)

    @property
    def fresh(self) -> bool:
        return self.verified.fresh


class ControlMessageRefused(TelemetryError):
    """Raised by :meth:`ControlGate.admit`: the message was refused (``error``) on ``spec``'s topic."""

    def __init__(self, spec: MessageSpec, levels: Mapping[str, str], error: PayloadRejected) -> None:
        super().__init__(str(error))
        self.spec, self.levels, self.error = spec, levels, error


class ControlGate:
    """Checks operator messages against the trust root and the persisted replay state."""

    def __init__(self, *, recipient: Recipient, trust: OperatorTrust, replay: ReplayStore, max_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.recipient, self.trust, self.replay_store = recipient, trust, replay
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self.state: ReplayState = replay.load()

    def admit(self, leaf: str, raw: bytes) -> Admitted | None:
        """The admitted message on ``leaf`` (under this device's base topic), or None when
        ``leaf`` is no operator topic.

        Raises:
            ControlMessageRefused: too large, not JSON, unsigned, unknown key, bad signature, misaddressed,
                expired, replayed (``error.reason_code`` says which).
        """
        found = match_leaf(leaf, sender=Sender.OPERATOR)
        if found is None:
            return None
        spec, levels = found
        try:
            doc = load_object(raw, max_bytes=self.max_bytes, what=f"{leaf} message")
            with self._lock:
                verified = self._verify(doc, leaf, spec)
                if verified.fresh:
                    state = self.state.accept(verified)
                    self.replay_store.save(state)  # before the message acts: it acts once
                    self.state = state
        except PayloadRejected as e:
            raise ControlMessageRefused(spec, levels, e) from e
        return Admitted(spec, levels, verified)

    def _verify(self, doc: dict, leaf: str, spec: MessageSpec) -> Verified:
        def attempt() -> Verified:
            return verify(doc, keys=self.trust.keys(), leaf=leaf, schema=spec.kind.schema, me=self.recipient,
                          now_ms=int(self._clock() * 1000), replay=self.state)

        try:
            return attempt()
        except UnknownOperatorKeyError as e:
            if not self.trust.learn(e.keyid):  # a rotated key this device has not seen yet?
                raise
            return attempt()
