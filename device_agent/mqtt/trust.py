"""What the control plane trusts: the operator keys (from the device's TUF root) and the
replay state (the newest version accepted per key and topic), both on disk.

- :class:`OperatorTrust` reads the operator keys from the newest of the device's trusted
  roots (``StateDir.trusted_roots``: the one ngclient verified last, else the provisioned
  one; or ``[mqtt] operator_root``). It re-reads them when a file changes, so a root that a
  TUF refresh rotated is used at once, and on a message signed by an unknown key it asks
  for one TUF refresh (at most every ``refresh_interval_s``) before refusing: that is how a
  device learns a rotated operator key it has not seen yet.
- :class:`ReplayStore` persists :class:`~runtime.contracts.mqtt.signing.ReplayState`
  atomically (temp, fsync, rename): the version check survives restarts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.signing import OperatorKeys, ReplayState
from runtime.fsutil import atomic_write_json

log = logging.getLogger("edgeship.telemetry")


def _read_root(path: Path) -> tuple[int, OperatorKeys] | None:
    try:
        doc = json.loads(path.read_text())
        return int(doc["signed"]["version"]), OperatorKeys.from_root(doc)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, PayloadRejected) as e:
        log.warning("trust root %s unreadable, ignored for operator keys: %s", path, e)
        return None


class OperatorTrust:
    """The operator keys this device accepts, from TUF root files (newest version wins)."""

    def __init__(self, roots: tuple[Path, ...] | list[Path], *, refresh: Callable[[], None] | None = None,
                 refresh_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.roots = tuple(Path(p) for p in roots)
        self.refresh = refresh
        self.refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._keys = OperatorKeys()
        self._last_refresh = float("-inf")

    def _stamps(self) -> tuple:
        out = []
        for p in self.roots:
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def keys(self) -> OperatorKeys:
        """The keys of the newest readable root (re-read when a root file changed)."""
        with self._lock:
            stamp = self._stamps()
            if stamp != self._stamp:
                found = [r for r in map(_read_root, self.roots) if r is not None]
                self._keys = max(found, key=lambda r: r[0])[1] if found else OperatorKeys()
                self._stamp = stamp
            return self._keys

    def learn(self, keyid: str) -> bool:
        """After a message signed by unknown ``keyid``: refresh the TUF root once (rate
        limited), re-read, and say whether the key is trusted now."""
        if self.refresh is None:
            return False
        with self._lock:
            now = self._clock()
            if now - self._last_refresh < self.refresh_interval_s:
                return False
            self._last_refresh = now
        try:
            self.refresh()
        except Exception as e:  # a failed refresh leaves the old root: the message stays refused
            log.warning("TUF refresh for operator key %s failed: %s", keyid[:12], e)
            return False
        return keyid in self.keys().keys


class ReplayStore:
    """``replay.json`` in the queue directory: load at start, replace atomically on change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> ReplayState:
        try:
            return ReplayState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return ReplayState()
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # Kept aside for a look; the state starts over. Expired messages stay refused (the
            # reference time starts at now), an unexpired one could be accepted once more.
            bad = self.path.with_suffix(".corrupt")
            self.path.rename(bad)
            log.error("replay state %s unreadable (%s), kept as %s; starting over", self.path, e, bad)
            return ReplayState(latest_issued_ms=int(time.time() * 1000))

    def save(self, state: ReplayState) -> None:
        atomic_write_json(self.path, state.to_json())
