"""``[capture]``: which requests the agent keeps on disk for retraining, and how much.

Capture is off unless the device's owner turns it on here (``enabled = true`` and at least one
rule, in this file or in the served bundle with ``use_bundle_rules``). Rules
(``[[capture.rules]]``, :class:`runtime.contracts.capture.rules.CaptureRule`) say when; the
section says where, how much disk in total, and which redaction hook every capture passes
through before it is written.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable

from runtime.contracts.capture.rules import CaptureRule, duplicate_names

from ..configfile import ConfigError, doc

_HOOK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class CaptureSection:
    enabled: bool = doc("Keep requests the rules select (inputs, outputs, the model that served them) on "
                        "disk. Off unless turned on here.", False)
    dir: str = doc("Directory of the capture set; empty = <state_dir>/capture.", "")
    disk_budget_bytes: int = doc("Bytes the capture set may take on disk (its files: captures, erased "
                                 "records not yet reclaimed, the index; plus at most a 64 KiB journal). A rule "
                                 "whose max_bytes is larger is clamped to it and reported; when the rules "
                                 "together fill it, the oldest captures of the lowest priority go first.",
                                 256 << 20)
    min_free_bytes: int = doc("Write no capture while the file system has less free space than this.", 512 << 20)
    queue_max: int = doc("Captures waiting for the writer thread at most; more are dropped and counted "
                         "(the request never waits for the disk).", 64)
    write_interval_s: float = doc("The writer thread wakes at most this often and writes the captures queued "
                                  "meanwhile in one go (sooner when the queue is half full): one wake-up per "
                                  "batch instead of one per capture. 0 = write each capture at once.", 0.5)
    index_interval_s: float = doc("The capture set's index.json is rewritten (after an fsync of the captures "
                                  "it lists) at most this often. A process crash loses no written capture (the "
                                  "next start re-adopts them); a power cut loses at most this plus "
                                  "write_interval_s of captures.", 2.0)
    redact: str = doc("A redaction hook \"module:function\" called as fn(draft) before every capture is "
                      "written: return the draft (changed or not) or None to drop it. Empty = none.", "")
    use_bundle_rules: bool = doc("Also apply the capture rules the served release ships with "
                                 "(model.json capture.rules); rules here win on a name clash.", True)
    recent_calls: int = doc("Recent calls kept in memory (by reference) for drift captures.", 256)
    recent_bytes: int = doc("Bytes of recent calls kept in memory at most for drift captures.", 16 << 20)
    rules: tuple[CaptureRule, ...] = doc("The capture rules ([[capture.rules]] tables).", ())

    def __post_init__(self) -> None:
        bad = []
        for i, r in enumerate(self.rules):
            bad += [f"rules[{i}] ({r.name or '?'}): {p}" for p in r.problems()]
        dup = duplicate_names(self.rules)
        if dup:
            bad.append(f"duplicate rule name(s) {dup}")
        if self.disk_budget_bytes < 1 or self.min_free_bytes < 0 or self.queue_max < 1:
            bad.append("disk_budget_bytes and queue_max must be >= 1, min_free_bytes >= 0")
        for k in ("write_interval_s", "index_interval_s"):
            if not 0 <= getattr(self, k) <= 60:
                bad.append(f"{k} {getattr(self, k)} must be in [0, 60]")
        if self.recent_calls < 0 or self.recent_bytes < 0:
            bad.append("recent_calls and recent_bytes must be >= 0")
        if self.redact and not _HOOK.match(self.redact):
            bad.append(f"redact {self.redact!r} is not \"module:function\"")
        if bad:
            raise ConfigError("[capture] " + "; ".join(bad))

    def redaction_hook(self) -> Callable[[Any], Any] | None:
        """The ``redact`` callable, imported now (at start: a hook that cannot load stops the
        agent rather than letting captures through unredacted).

        Raises:
            ConfigError: the module does not import or has no such callable.
        """
        if not self.redact:
            return None
        module, _, name = self.redact.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"[capture] redact {self.redact!r}: cannot load it: {e}") from e
        if not callable(fn):
            raise ConfigError(f"[capture] redact {self.redact!r} is not callable")
        return fn
