"""What a device remembers about releases: the ones it ran, and the ones that failed here.

``<state_dir>/update/releases.json`` (``StateDir.release_memory``), per model:

- ``ran``: release -> sha256 of every release that committed here (plus, implicitly, the
  store's active and previous model). The **release-counter rule** (docs/ota.md):
  an update goes only to a release above the newest the device ran (the *floor*), which
  defeats a repository or mirror that serves an old, validly signed release; the one
  exception is an **operator-signed** desired state (``Authority.OPERATOR``) naming a
  release this device ran before, with the same bytes: a fleet rollback, or going back to
  a release after a forced rollback. Polling and local requests never go below the floor.
- ``boxed``: sha256 -> :class:`Penalty` for every release whose gate or trial failed here
  (the **penalty box**, after NervesHub). Nothing reaches a boxed release again, neither
  polling (which skips it and says so once) nor a desired state, until an operator-signed
  ``retry`` command takes it out (:meth:`ReleaseMemory.forgive`); a new release has a new
  hash and is not boxed.

The decisions are pure functions of values (:func:`choose`); :class:`ReleaseMemoryFile` is
the atomic JSON file.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from runtime.fsutil import atomic_write_json

from ..logs import get_logger
from .errors import NoSuchTargetError, PenaltyBoxError, ReleaseRollbackError

log = get_logger("update.releases")


class Authority(str, enum.Enum):
    """Who asked for an update: decides whether it may go below the floor."""

    LOCAL = "local"        # edgeship-agent update, the control route, polling
    OPERATOR = "operator"  # a desired state signed by the operator key (device_agent.mqtt)


#: update outcomes whose release goes into the penalty box (reason code prefixes)
BOXING_PREFIXES = ("gate.", "trial.", "state.crash_loop")


@dataclass(frozen=True)
class Penalty:
    sha256: str
    release: int | None
    reason: str
    detail: str
    failed_utc: str
    skips: int = 0          # polls that skipped it
    announced: bool = False  # the first skip was reported (said once)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelMemory:
    ran: Mapping[int, str] = field(default_factory=dict)
    boxed: Mapping[str, Penalty] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ran": {str(r): s for r, s in sorted(self.ran.items())},
                "boxed": {s: p.to_json() for s, p in sorted(self.boxed.items())}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ModelMemory":
        return cls(ran={int(r): str(s) for r, s in d.get("ran", {}).items()},
                   boxed={str(s): Penalty(**p) for s, p in d.get("boxed", {}).items()})


@dataclass(frozen=True)
class ReleaseMemory:
    models: Mapping[str, ModelMemory] = field(default_factory=dict)

    def of(self, model: str) -> ModelMemory:
        return self.models.get(model, ModelMemory())

    def _with(self, model: str, mm: ModelMemory) -> "ReleaseMemory":
        return ReleaseMemory({**self.models, model: mm})

    def ran(self, model: str, release: int, sha256: str) -> "ReleaseMemory":
        mm = self.of(model)
        return self._with(model, replace(mm, ran={**mm.ran, release: sha256}))

    def box(self, model: str, penalty: Penalty) -> "ReleaseMemory":
        mm = self.of(model)
        return self._with(model, replace(mm, boxed={**mm.boxed, penalty.sha256: penalty}))

    def skipped(self, model: str, sha256: str) -> "ReleaseMemory":
        """One more poll skipped ``sha256``; from now on it has been announced."""
        mm = self.of(model)
        p = mm.boxed[sha256]
        return self.box(model, replace(p, skips=p.skips + 1, announced=True))

    def forgive(self, model: str, *, release: int | None = None,
                sha256: str | None = None) -> tuple["ReleaseMemory", list[Penalty]]:
        """Take the boxed entries of ``release`` (or ``sha256``) out; returns them."""
        mm = self.of(model)
        out = [p for p in mm.boxed.values() if (release is not None and p.release == release)
               or (sha256 is not None and p.sha256 == sha256)]
        keep = {s: p for s, p in mm.boxed.items() if p not in out}
        return self._with(model, replace(mm, boxed=keep)), out

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": 1, "models": {m: mm.to_json() for m, mm in sorted(self.models.items())}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ReleaseMemory":
        if d.get("schema_version") != 1:
            raise ValueError(f"schema_version {d.get('schema_version')!r} is not 1")
        return cls({m: ModelMemory.from_json(mm) for m, mm in d.get("models", {}).items()})


def boxes(state: str, reason: str | None) -> bool:
    """Whether an update that ended in ``state`` with ``reason`` puts its release in the box."""
    return state in ("failed", "rolled_back") and bool(reason) and reason.startswith(BOXING_PREFIXES)


def floor(mm: ModelMemory, store_refs: Iterable[tuple[int, str]]) -> int:
    """The newest release this device ran: committed releases and the store's active/previous."""
    return max([*mm.ran, *(r for r, _ in store_refs)], default=0)


def ran_before(mm: ModelMemory, store_refs: Iterable[tuple[int, str]], release: int, sha256: str) -> bool:
    return mm.ran.get(release) == sha256 or (release, sha256) in set(store_refs)


def newest_allowed(cands: list, *, mm: ModelMemory, top: int, fits) -> tuple[Any, list[Penalty]]:
    """What polling may run: the newest candidate above the floor ``top`` that ``fits`` the
    device and is not boxed, and the boxed ones it passed over (newest first)."""
    skipped = []
    for c in cands:
        if c.release > top and fits(c):
            if c.sha256 not in mm.boxed:
                return c, skipped
            skipped.append(mm.boxed[c.sha256])
    return None, skipped


def choose(cands: list, *, model: str, requested: int | None, mm: ModelMemory,
           store_refs: list[tuple[int, str]], authority: Authority):
    """The candidate (``trust.Candidate``, newest first) an update goes to, or None when the
    newest is not above the floor (nothing to do).

    Raises:
        NoSuchTargetError: no signed target (of that release).
        PenaltyBoxError: the requested (or newest) release failed here before.
        ReleaseRollbackError: at or below the floor, and not an operator-signed return to a
            release this device ran with the same bytes.
    """
    top = floor(mm, store_refs)
    if requested is None:
        if not cands:
            raise NoSuchTargetError(f"the repository has no signed target for model {model!r}")
        pick = cands[0]
        if pick.release <= top:
            return None
    else:
        found = [c for c in cands if c.release == requested]
        if not found:
            raise NoSuchTargetError(f"no signed release {requested} of {model!r} "
                                    f"(have {[c.release for c in cands]})")
        pick = found[0]
    if pick.sha256 in mm.boxed:
        p = mm.boxed[pick.sha256]
        raise PenaltyBoxError(f"{model} release {pick.release} failed on this device ({p.reason}, "
                              f"{p.failed_utc}) and is in its penalty box; publish a new release, or send "
                              f"`edgeship fleet command retry --release {pick.release}`")
    if pick.release > top:
        return pick
    if authority is Authority.OPERATOR and ran_before(mm, store_refs, pick.release, pick.sha256):
        return pick
    raise ReleaseRollbackError(
        f"{model}: release {pick.release} is not above release {top}, the newest this device ran"
        + ("; an operator-signed desired state may return only to a release this device ran before"
           if authority is Authority.OPERATOR else
           "; only an operator-signed desired state may go back (to a release this device ran), "
           "or publish the old bytes as a new release"))


class ReleaseMemoryFile:
    """``update/releases.json``: read on each use, replaced atomically on each change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> ReleaseMemory:
        try:
            return ReleaseMemory.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return ReleaseMemory()
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # Forgetting the box would re-run failed releases; keep the file and say so loudly.
            bad = self.path.with_suffix(".corrupt")
            self.path.rename(bad)
            log.error("update.release_memory_corrupt", path=str(self.path), error=str(e), kept_as=str(bad))
            return ReleaseMemory()

    def save(self, memory: ReleaseMemory) -> None:
        atomic_write_json(self.path, memory.to_json())

    def record(self, *, model: str, release: int, sha256: str, state: str, reason: str | None, detail: str,
               utc: str, replaced: Any = None) -> None:
        """Remember how an update of ``release`` ended: committed joins ``ran`` (and so does
        ``replaced``, the model it replaced: a ``ModelRef``, e.g. the installed one); a failed
        gate or trial goes into the penalty box."""
        if state == "commit":
            mem = self.load().ran(model, release, sha256)
            if replaced is not None:
                mem = mem.ran(replaced.name, replaced.release, replaced.sha256)
            self.save(mem)
        elif boxes(state, reason):
            self.save(self.load().box(model, Penalty(sha256=sha256, release=release, reason=reason or state,
                                                     detail=detail[:500], failed_utc=utc)))
            log.warning("update.penalty_box", model=model, release=release, sha256=sha256, reason=reason)

    def note_skip(self, model: str, sha256: str) -> Penalty:
        """Count one poll that skipped a boxed release; returns its entry as it was before."""
        mem = self.load()
        before = mem.of(model).boxed[sha256]
        self.save(mem.skipped(model, sha256))
        return before

    def forgive(self, model: str, release: int) -> list[Penalty]:
        """Take ``model`` ``release`` out of the penalty box (an operator-signed ``retry``)."""
        mem, out = self.load().forgive(model, release=release)
        if out:
            self.save(mem)
            log.info("update.forgiven", model=model, release=release)
        return out

    def penalties(self) -> list[dict[str, Any]]:
        """Every boxed release, for the device's reported state."""
        return [{"model": m, **p.to_json()} for m, mm in self.load().models.items() for p in mm.boxed.values()]
