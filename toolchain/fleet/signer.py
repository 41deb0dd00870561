"""The operator's side of the signed control plane: sign desired state and commands.

One :class:`OperatorSigner` per process holds the operator's private key (from
``KEYS/online/operator/``, made by ``edgeship keys init``) and hands out versions that only
go up: ``max(now in microseconds, last + 1)``, so two commands signed in the same
microsecond, by `push`, `fleet command` or the rollout controller, still differ and a device
accepts each once. Two machines signing with the same key need clocks within the expiry of
each other (NTP); a signer whose clock is behind a device's newest accepted version is
refused with ``control.replayed`` (visible in ``fleet watch``) until it catches up.

The envelope and the checks a device makes are defined in ``runtime.contracts.mqtt.signing``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Mapping

from runtime.contracts.mqtt.messages import MESSAGES, Kind
from runtime.contracts.mqtt.payloads import Desired
from runtime.contracts.mqtt.signing import Addressee, Signed, keyid_of, public_raw, sign

#: desired state is retained for devices that come back: valid for weeks, not minutes
DESIRED_EXPIRES_S = 30 * 86400
#: a command is answered now or never
COMMAND_EXPIRES_S = 300


class OperatorSigner:
    """Signs operator messages with one Ed25519 key. Thread-safe."""

    def __init__(self, private_key: Any, *, clock=time.time) -> None:
        self._key = private_key
        self.keyid = keyid_of(public_raw(private_key))
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    @classmethod
    def from_keys_dir(cls, keys_dir: str | os.PathLike) -> "OperatorSigner":
        """Raises KeyStoreError: no single operator key in ``KEYS/online/operator/``."""
        from ..ota.keys import load_operator_key

        return cls(load_operator_key(keys_dir=keys_dir))

    def next_version(self) -> int:
        with self._lock:
            self._last = max(int(self._clock() * 1_000_000), self._last + 1)
            return self._last

    def sign(self, *, kind: Kind, leaf: str, to: Addressee, body: Mapping[str, Any], expires_s: float) -> bytes:
        """The signed wire payload of one message of ``kind`` for topic ``leaf`` to ``to``."""
        return self.sign_schema(schema=kind.schema, leaf=leaf, to=to, body=body, expires_s=expires_s)

    def sign_schema(self, *, schema: str, leaf: str, to: Addressee, body: Mapping[str, Any],
                    expires_s: float) -> bytes:
        """Sign a message of any schema (e.g. a rollout's control message, not a device kind)."""
        now_ms = int(self._clock() * 1000)
        signed = Signed(schema=schema, leaf=leaf, to=to, version=self.next_version(),
                        issued_at_ms=now_ms, expires_at_ms=now_ms + int(expires_s * 1000), body=dict(body))
        return sign(signed, private_key=self._key)

    def desired(self, desired: Desired, *, to: Addressee, expires_s: float = DESIRED_EXPIRES_S) -> bytes:
        return self.sign(kind=Kind.DESIRED, leaf=MESSAGES[Kind.DESIRED].leaf, to=to, body=desired.to_json(),
                         expires_s=expires_s)

    def command(self, name: str, body: Mapping[str, Any], *, to: Addressee,
                expires_s: float = COMMAND_EXPIRES_S) -> bytes:
        return self.sign(kind=Kind.CMD, leaf=MESSAGES[Kind.CMD].leaf.format(name=name), to=to, body=body,
                         expires_s=expires_s)
