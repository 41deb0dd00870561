"""The on-device model store: content-addressed bundles and atomically switched pointers.

Layout under ``state_dir`` (named in ``runtime.contracts.statedir.StateDir``)::

    models/<bundle_sha256>/{model.json, model/..., golden.npz}   # complete, read-only files
    pointers.json   # {"schema_version": 1, "active": ModelRef|null, "previous": ModelRef|null}
    tmp/            # unpack and delete area; emptied by Store() at start
    update/         # owned by the updater (issue 5)
    store.lock      # flock held while the store is being changed

Invariants:
- A directory under ``models/`` is complete: a bundle is unpacked into ``tmp/``, every file
  checked against model.json, fsynced, and only then renamed into ``models/``. A crash
  leaves at most a directory in ``tmp/``, which is never counted as a model and is removed
  at the next start.
- ``active`` and ``previous`` live in one file replaced in one ``os.replace`` (temp file,
  fsync, rename, fsync dir), so both switch together or not at all.
- Nothing under ``models/`` is modified in place; garbage collection renames a directory
  into ``tmp/`` before deleting it, and never touches the active model, the previous model,
  or a model the caller says is in use.

Allowed changes: ``install_bundle`` (adds a model; no pointer change), ``activate(sha)``
(active -> previous, sha -> active), ``rollback()`` (swap active and previous),
``gc(in_use)``. Each takes ``store.lock``, so a CLI and a running agent cannot interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tarfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from runtime.contracts.bundle import (
    MAX_MODEL_JSON_BYTES, MODEL_JSON, BundleError, BundleInfo, check_members,
)
from runtime.contracts.statedir import StateDir
from runtime.errors import ExitCode
from runtime.fsutil import atomic_write_json, fsync_dir, sha256_file

from .errors import DeviceAgentError

#: test hook: set to a checkpoint name and the process SIGKILLs itself there
KILL_ENV = "EDGESHIP_TEST_KILL_AT"
_SHA = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class StoreError(DeviceAgentError):
    """Base class of every store error."""


class BundleRejectedError(StoreError):
    """A bundle file failed a check (hash, tar members, model.json, a file's hash)."""

    exit_code = ExitCode.BAD_INPUT


class BundleHashMismatchError(BundleRejectedError):
    """The bundle file's sha256 is not the one the caller expected."""


class ModelNotInStoreError(StoreError, KeyError):
    """No complete model with that sha256 is in the store."""


class NoPreviousModelError(StoreError):
    """Rollback asked for, but there is no previous model."""


class StoreCorruptError(StoreError):
    """pointers.json is unreadable or names a model that is not in the store."""


_REPAIR = (" (move it aside, then choose the active model again with "
           "`edgeship-agent install --force --bundle FILE`; the models in models/ are kept)")


def checkpoint(name: str) -> None:
    """Crash-test hook: SIGKILL this process when ``$EDGESHIP_TEST_KILL_AT == name``."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ModelRef:
    """A model in the store, as pointers and status report it."""

    sha256: str
    name: str
    version: str
    release: int
    engine: str
    precision: str

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "name": self.name, "version": self.version,
                "release": self.release, "engine": self.engine, "precision": self.precision}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelRef":
        keys = {"sha256", "name", "version", "release", "engine", "precision"}
        if not isinstance(d, dict) or set(d) != keys:
            raise StoreCorruptError(f"model reference {d!r} must have exactly {sorted(keys)}")
        return cls(**d)

    @classmethod
    def of(cls, sha256: str, info: BundleInfo) -> "ModelRef":
        return cls(sha256=sha256, name=info.name, version=info.version, release=info.release,
                   engine=info.engine.value, precision=info.precision.value)


class Store:
    """The model store under ``state_dir``. Creating one makes the directories and empties tmp/."""

    def __init__(self, state_dir: str | os.PathLike, *, max_bundle_bytes: int = 4 << 30) -> None:
        self.root = Path(state_dir)
        self.paths = StateDir(self.root)
        self.models_dir = self.paths.models
        self.tmp_dir = self.paths.tmp
        self.update_dir = self.paths.update
        self.max_bundle_bytes = max_bundle_bytes
        for d in (self.root, self.models_dir, self.tmp_dir, self.update_dir):
            d.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._clean_tmp()

    # ------------------------------------------------------------------ reading
    def active(self) -> ModelRef | None:
        return self._pointers()[0]

    def previous(self) -> ModelRef | None:
        return self._pointers()[1]

    def model_dir(self, sha256: str) -> Path:
        """The directory of a complete model. Raises ModelNotInStoreError."""
        d = self.models_dir / sha256
        if not _SHA.match(sha256) or not d.is_dir():
            raise ModelNotInStoreError(f"model {sha256[:12]} is not in the store {self.models_dir}")
        return d

    def info(self, sha256: str) -> BundleInfo:
        """The model.json of a stored model. Raises ModelNotInStoreError, BundleError."""
        p = self.model_dir(sha256) / MODEL_JSON
        return BundleInfo.from_bytes(p.read_bytes(), where=str(p))

    def ref(self, sha256: str) -> ModelRef:
        return ModelRef.of(sha256, self.info(sha256))

    def model_path(self, sha256: str) -> Path:
        """The engine's model file of a stored model."""
        return self.model_dir(sha256) / self.info(sha256).model_path

    def models(self) -> list[ModelRef]:
        """Every complete model in the store (names that are not a sha256 are ignored)."""
        out = []
        for d in sorted(self.models_dir.iterdir()):
            if _SHA.match(d.name) and d.is_dir():
                try:
                    out.append(self.ref(d.name))
                except (BundleError, OSError):
                    continue
        return out

    def verify(self, sha256: str) -> list[str]:
        """Problems with a stored model's files against its model.json (empty when intact)."""
        d = self.model_dir(sha256)
        info = self.info(sha256)
        problems = []
        for f in info.files:
            p = d / f.path
            if not p.is_file():
                problems.append(f"{f.path}: missing")
            elif sha256_file(p) != f.sha256:
                problems.append(f"{f.path}: sha256 differs from model.json")
        return problems

    # ------------------------------------------------------------------ changing
    def install_bundle(self, path: str | os.PathLike, *, expected_sha256: str | None = None) -> ModelRef:
        """Unpack and check a bundle, then rename it into ``models/<sha256>/``. Idempotent.

        Does not change which model is active (see :meth:`activate`).

        Raises:
            BundleHashMismatchError: the file's sha256 differs from ``expected_sha256``.
            BundleRejectedError: not a tar, unsafe or unexpected members, an invalid
                model.json, a file whose size or sha256 differs from model.json, too large.
            OSError: the file cannot be read or the store cannot be written.
        """
        path = Path(path)
        # One open file for hashing and unpacking: replacing the path meanwhile cannot swap
        # the bytes, and re-hashing after the unpack catches a change made in place.
        with open(path, "rb") as f, self._locked():
            sha = _sha256_fileobj(f)
            if expected_sha256 is not None and sha != expected_sha256:
                raise BundleHashMismatchError(f"{path}: sha256 {sha} differs from the expected {expected_sha256}")
            final = self.models_dir / sha
            if final.is_dir():
                return self.ref(sha)
            work = self.tmp_dir / f"{sha}.{uuid.uuid4().hex[:8]}"
            try:
                f.seek(0)
                info = self._unpack(f, work, where=str(path))
                if _sha256_fileobj(f) != sha:
                    raise BundleRejectedError(f"{path}: the file changed while it was being unpacked")
                checkpoint("store.unpacked")
                os.rename(work, final)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            fsync_dir(self.models_dir)
            checkpoint("store.installed")
            return ModelRef.of(sha, info)

    def activate(self, sha256: str) -> None:
        """Make a stored model active; the active one becomes previous. No-op if already active.

        Raises:
            ModelNotInStoreError: no such complete model.
        """
        with self._locked():
            ref = self.ref(sha256)
            active, previous = self._pointers()
            if active is not None and active.sha256 == sha256:
                return
            checkpoint("store.before_switch")
            self._write_pointers(ref, active if active is not None else previous)
            checkpoint("store.switched")

    def rollback(self) -> ModelRef:
        """Swap active and previous; return the model now active.

        Raises:
            NoPreviousModelError: nothing to roll back to.
            ModelNotInStoreError: the previous model's directory is gone.
        """
        with self._locked():
            active, previous = self._pointers()
            if previous is None:
                raise NoPreviousModelError(f"{self.root}: there is no previous model to roll back to")
            self.model_dir(previous.sha256)
            checkpoint("store.before_switch")
            self._write_pointers(previous, active)
            return previous

    def gc(self, in_use: set[str] | frozenset[str] = frozenset(), *, min_age_s: float = 0.0) -> list[str]:
        """Delete every model that is not active, previous, in ``in_use``, or installed less
        than ``min_age_s`` ago (a model an update has staged but not switched to yet);
        return their shas."""
        removed = []
        with self._locked():
            active, previous = self._pointers()
            keep = set(in_use) | {r.sha256 for r in (active, previous) if r is not None}
            now = time.time()
            for d in sorted(self.models_dir.iterdir()):
                if not _SHA.match(d.name) or d.name in keep:
                    continue
                if min_age_s > 0 and now - d.stat().st_mtime < min_age_s:
                    continue
                # rename first: a crash mid-delete leaves debris in tmp/, never a half model
                doomed = self.tmp_dir / f"gc.{d.name}.{uuid.uuid4().hex[:8]}"
                os.rename(d, doomed)
                fsync_dir(self.models_dir)
                _rmtree(doomed)
                removed.append(d.name)
        return removed

    # ----------------------------------------------------------------- internals
    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.paths.store_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _clean_tmp(self) -> None:
        for p in self.tmp_dir.iterdir():
            _rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)

    def _pointers(self) -> tuple[ModelRef | None, ModelRef | None]:
        p = self.paths.pointers
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, json.JSONDecodeError) as e:
            raise StoreCorruptError(f"{p}: unreadable: {e}{_REPAIR}") from e
        if not isinstance(d, dict) or d.get("schema_version") != 1 or set(d) != {"schema_version", "active", "previous"}:
            raise StoreCorruptError(f"{p}: not a schema_version 1 pointer file{_REPAIR}")
        return tuple(None if d[k] is None else ModelRef.from_json(d[k]) for k in ("active", "previous"))  # type: ignore[return-value]

    def _write_pointers(self, active: ModelRef | None, previous: ModelRef | None) -> None:
        atomic_write_json(self.paths.pointers, {
            "schema_version": 1,
            "active": active.to_json() if active else None,
            "previous": previous.to_json() if previous else None,
        })

    def _unpack(self, fileobj, work: Path, *, where: str) -> BundleInfo:
        try:
            with tarfile.open(fileobj=fileobj, mode="r:") as tf:
                members = tf.getmembers()
                check_members(members, where=where, max_total_bytes=self.max_bundle_bytes)
                mj = next(m for m in members if m.name == MODEL_JSON)
                if mj.size > MAX_MODEL_JSON_BYTES:
                    raise BundleRejectedError(f"{where}: {MODEL_JSON} is over {MAX_MODEL_JSON_BYTES} bytes")
                info = BundleInfo.from_bytes(tf.extractfile(mj).read(), where=f"{where}:{MODEL_JSON}")  # type: ignore[union-attr]
                check_members(members, info, where=where)
                work.mkdir(parents=True)
                hashes = {m.name: _copy_member(tf, m, work) for m in members}
        except BundleError as e:
            raise BundleRejectedError(str(e)) from e
        except tarfile.TarError as e:
            raise BundleRejectedError(f"{where}: not a readable uncompressed tar: {e}") from e
        for f in info.files:
            if hashes[f.path] != f.sha256:
                raise BundleRejectedError(f"{where}: {f.path} has sha256 {hashes[f.path][:12]}.., "
                                          f"model.json says {f.sha256[:12]}..")
        for d in sorted({p.parent for p in work.rglob("*")} | {work}, key=lambda p: -len(p.parts)):
            fsync_dir(d)
        return info


def _sha256_fileobj(f) -> str:
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def _copy_member(tf: tarfile.TarFile, m: tarfile.TarInfo, root: Path) -> str:
    """Write one (already checked) member under ``root``, read-only; return its sha256."""
    dest = root / m.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tf.extractfile(m)
    h = hashlib.sha256()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    with os.fdopen(fd, "wb") as out:
        left = m.size
        while left:
            block = src.read(min(_CHUNK, left))  # type: ignore[union-attr]
            if not block:
                raise BundleRejectedError(f"{m.name}: truncated in the tar")
            h.update(block)
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def _rmtree(p: Path) -> None:
    def onerror(func, path, exc_info):  # read-only files in a writable dir delete fine; dirs may not
        if isinstance(exc_info[1], FileNotFoundError):
            return
        os.chmod(os.path.dirname(path), 0o755)
        func(path)

    shutil.rmtree(p, onerror=onerror)
