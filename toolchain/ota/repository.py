"""A TUF repository on disk: create it, publish a bundle, rotate a key, refresh the timestamp.

Every change writes *new* versioned files (``<N>.targets.json``, ``<N>.snapshot.json``,
``<N>.root.json``) with temp-file + fsync + rename, and replaces ``timestamp.json`` last:
that one rename is the commit point, so a client reads either the old consistent set or
the new one. A file lock serializes publishers. Old versions stay so clients in the middle
of a refresh still find them (consistent snapshots).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runtime.contracts.release import ReleaseFacts
from runtime.fsutil import AtomicFile, atomic_write_bytes, sha256_file

from . import keys as keystore
from .keys import utc_in
from .errors import PublishRefusedError, KeyStoreError, RepositoryStateError


def _ser():
    from tuf.api.serialization.json import JSONSerializer

    return JSONSerializer(compact=False)


class Repository:
    """Read and write the metadata of one repository directory (not thread-safe; use ``lock``)."""

    def __init__(self, repo_dir: str | os.PathLike, *, keys_dir: str | os.PathLike) -> None:
        self.dir = Path(repo_dir)
        self.keys_dir = Path(keys_dir)
        self.metadata_dir = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"

    # -- reading ---------------------------------------------------------------
    def exists(self) -> bool:
        return (self.metadata_dir / "timestamp.json").exists()

    def _read(self, name: str):
        from tuf.api.metadata import Metadata

        p = self.metadata_dir / name
        try:
            return Metadata.from_bytes(p.read_bytes())
        except FileNotFoundError:
            raise RepositoryStateError(f"{p}: missing; is {self.dir} an edgeship TUF repository?") from None

    def root(self):
        return self._read("root.json")

    def timestamp(self):
        return self._read("timestamp.json")

    def snapshot(self):
        v = self.timestamp().signed.snapshot_meta.version
        return self._read(f"{v}.snapshot.json")

    def targets(self):
        v = self.snapshot().signed.meta["targets.json"].version
        return self._read(f"{v}.targets.json")

    # -- writing ---------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".publish.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RepositoryStateError(f"{self.dir}: another publish is running (lock held)") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _sign(self, md, role: str, root) -> None:
        signers = keystore.load_signers(keys_dir=self.keys_dir, role=role, root=root)
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)

    def write_metadata(self, name: str, md) -> int:
        """Write one metadata file atomically; returns its length in bytes."""
        data = md.to_bytes(_ser())
        atomic_write_bytes(self.metadata_dir / name, data)
        return len(data)

    def create(self, *, expires_days: float, timestamp_expires_days: float) -> None:
        """Start a repository from ``KEYS/root.json`` with empty targets.

        Raises:
            RepositoryStateError: the repository already exists.
            KeyStoreError: no root.json in the key directory.
        """
        from tuf.api.metadata import Metadata, Targets

        if self.exists():
            raise RepositoryStateError(f"{self.dir}: repository already exists")
        src = self.keys_dir / "root.json"
        if not src.exists():
            raise KeyStoreError(f"{src}: missing; run `edgeship keys init --dir {self.keys_dir}` first")
        root = Metadata.from_bytes(src.read_bytes())
        data = src.read_bytes()
        atomic_write_bytes(self.metadata_dir / f"{root.signed.version}.root.json", data)
        atomic_write_bytes(self.metadata_dir / "root.json", data)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        targets = Metadata(Targets(version=1, expires=utc_in(days=expires_days)))
        self.commit(targets=targets, root=root.signed, expires_days=expires_days,
                    timestamp_expires_days=timestamp_expires_days, first=True)

    def commit(self, *, targets, root, expires_days: float, timestamp_expires_days: float,
               first: bool = False) -> None:
        """Bump and sign targets, snapshot and timestamp; write timestamp last (the commit point).

        ``first``: the repository is new; write version 1 of each role.
        """
        from tuf.api.metadata import MetaFile, Metadata, Snapshot

        if not first:
            targets.signed.version += 1
        targets.signed.expires = utc_in(days=expires_days)
        self._sign(targets, "targets", root)
        self.write_metadata(f"{targets.signed.version}.targets.json", targets)

        snap_v = 0 if first else self.snapshot().signed.version
        snapshot = Metadata(Snapshot(version=snap_v + 1, expires=utc_in(days=expires_days),
                                     meta={"targets.json": MetaFile(version=targets.signed.version)}))
        self._sign(snapshot, "snapshot", root)
        snap_len = self.write_metadata(f"{snapshot.signed.version}.snapshot.json", snapshot)

        self._write_timestamp(snapshot, snap_len, root=root, expires_days=timestamp_expires_days,
                              version=0 if first else None)

    def _write_timestamp(self, snapshot, snap_len: int, *, root, expires_days: float,
                         version: int | None) -> None:
        from tuf.api.metadata import MetaFile, Metadata, Timestamp


        ts_v = self.timestamp().signed.version if version is None else version
        snap_file = self.metadata_dir / f"{snapshot.signed.version}.snapshot.json"
        meta = MetaFile(version=snapshot.signed.version, length=snap_len,
                        hashes={"sha256": sha256_file(snap_file)})
        ts = Metadata(Timestamp(version=ts_v + 1, expires=utc_in(days=expires_days), snapshot_meta=meta))
        self._sign(ts, "timestamp", root)
        self.write_metadata("timestamp.json", ts)

    def refresh_timestamp(self, *, expires_days: float) -> int:
        """Re-sign the timestamp with a new expiry (run it from cron with the online key)."""
        snap = self.snapshot()
        name = f"{snap.signed.version}.snapshot.json"
        self._write_timestamp(snap, (self.metadata_dir / name).stat().st_size, root=self.root().signed,
                              expires_days=expires_days, version=None)
        return self.timestamp().signed.version

    def target_file(self, *, target_path: str, sha256: str) -> Path:
        """Where a target's bytes live: its consistent-snapshot name ``<dir>/<sha256>.<file>``."""
        parent, _, name = target_path.rpartition("/")
        return self.targets_dir / parent / f"{sha256}.{name}"

    def store_target(self, *, bundle: Path, target_path: str, sha256: str) -> Path:
        """Copy a bundle to :meth:`target_file`, atomically."""
        dst = self.target_file(target_path=target_path, sha256=sha256)
        if dst.exists():
            return dst
        # 0644: a static server running as another user must read it
        with AtomicFile(dst.parent, mode=0o644, prefix=".part.") as out, open(bundle, "rb") as src:
            shutil.copyfileobj(src, out.file, 1 << 20)
            return out.commit(dst)


def check_release_is_new(targets, facts: ReleaseFacts, sha256: str) -> None:
    """Refuse a release counter at or below one already published for the model (pure).

    Raises:
        PublishRefusedError: same bundle already published, or release not above the latest.
    """
    latest = 0
    for path, tf in targets.signed.targets.items():
        signed = ReleaseFacts.from_target(tf.unrecognized_fields)
        if tf.hashes.get("sha256") == sha256:
            raise PublishRefusedError(f"bundle {sha256[:12]} is already published as {path}")
        if signed is not None and signed.name == facts.name:
            latest = max(latest, signed.release)
    if facts.release <= latest:
        raise PublishRefusedError(
            f"{facts.name}: release {facts.release} is not above the latest published release "
            f"{latest}; package it with a higher --release (an intended rollback is a new release)"
        )
