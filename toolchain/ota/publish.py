"""`edgeship publish` and `edgeship keys rotate`: change a repository, atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime.fsutil import sha256_file

from . import keys as keystore
from .keys import check_expiry, utc_in
from runtime.contracts.release import ReleaseFacts

from .errors import PublishRefusedError, KeyStoreError, RepositoryStateError
from .repository import Repository, check_release_is_new


@dataclass(frozen=True)
class Published:
    target_path: str
    sha256: str
    length: int
    release: int
    targets_version: int
    timestamp_version: int


def read_bundle_facts(bundle: str | os.PathLike) -> ReleaseFacts:
    """The facts of a bundle .tar that its target will carry (runtime.contracts.release),
    from its model.json (strictly checked by ``runtime.contracts.bundle``).

    Raises:
        PublishRefusedError: not a bundle, or an invalid model.json (names the key).
    """
    from runtime.contracts.bundle import BundleError, read_bundle_info

    try:
        info = read_bundle_info(bundle)
    except (BundleError, OSError) as e:
        raise PublishRefusedError(
            f"{bundle}: not a valid edgeship bundle (make one with `edgeship package`): {e}") from e
    return ReleaseFacts.of(info)


def publish(
    *,
    bundle: str | os.PathLike,
    repo_dir: str | os.PathLike,
    keys_dir: str | os.PathLike,
    expires_days: float = 90.0,
    timestamp_expires_days: float = 7.0,
    init: bool = False,
) -> Published:
    """Add a bundle as a TUF target (facts in custom metadata) and re-sign targets, snapshot, timestamp.

    With ``init``, creates the repository from ``KEYS/root.json`` when ``repo_dir`` holds none
    yet; without it a folder that is not a repository is refused (a mistyped ``--repo`` must
    not silently start a second repository).

    Raises:
        PublishRefusedError, KeyStoreError, RepositoryStateError (also: not a repository and
        no ``init``).
    """
    from tuf.api.metadata import TargetFile

    check_expiry(expires_days=expires_days, timestamp_expires_days=timestamp_expires_days)
    bundle = Path(bundle)
    facts = read_bundle_facts(bundle)
    repo = Repository(repo_dir, keys_dir=keys_dir)
    if not init and not repo.exists():
        raise RepositoryStateError(not_a_repository(repo_dir) + "; to start a new repository there, "
                                   "publish with --init")
    with repo.lock():
        if not repo.exists():
            repo.create(expires_days=expires_days, timestamp_expires_days=timestamp_expires_days)
        root = repo.root().signed
        targets = repo.targets()
        sha = sha256_file(bundle)
        check_release_is_new(targets, facts, sha)
        target_path = f"{facts.name}/{bundle.name}"
        was_stored = repo.target_file(target_path=target_path, sha256=sha).exists()
        stored = repo.store_target(bundle=bundle, target_path=target_path, sha256=sha)
        try:
            tf = TargetFile.from_file(target_path, str(stored), ["sha256"])
            tf.unrecognized_fields["custom"] = facts.custom_metadata()
            targets.signed.targets[target_path] = tf
            repo.commit(targets=targets, root=root, expires_days=expires_days,
                        timestamp_expires_days=timestamp_expires_days)
        except BaseException:  # e.g. a signing key missing: leave no unsigned bundle behind
            if not was_stored:
                stored.unlink(missing_ok=True)
            raise
        return Published(target_path=target_path, sha256=sha, length=tf.length,
                         release=facts.release, targets_version=targets.signed.version,
                         timestamp_version=repo.timestamp().signed.version)


def not_a_repository(repo_dir: str | os.PathLike) -> str:
    """Why ``repo_dir`` is not a TUF repository (for the errors of publish and repo serve)."""
    p = Path(repo_dir)
    if not p.exists():
        return f"{repo_dir}: no such folder"
    if not p.is_dir():
        return f"{repo_dir}: not a folder"
    return f"{repo_dir}: not a TUF repository (no metadata/timestamp.json)"


def rotate_key(
    *,
    role: str,
    repo_dir: str | os.PathLike,
    keys_dir: str | os.PathLike,
    keyid: str | None = None,
    expires_days: float = 90.0,
    timestamp_expires_days: float = 7.0,
    root_expires_days: float = 365.0,
) -> tuple[str, str]:
    """Replace one key of ``role`` with a new one; root is re-signed by old and new root keys.

    Then targets, snapshot and timestamp are re-signed so every role verifies with the new
    root. Returns ``(old_keyid, new_keyid)``; the old private key moves to ``KEYS/retired``.

    Raises:
        KeyStoreError: unknown role/key id or missing private keys.
        RepositoryStateError: no repository at ``repo_dir``.
    """
    if role not in keystore.ROLES and role != keystore.OPERATOR:
        raise KeyStoreError(f"unknown role {role!r}; choose one of {[*keystore.ROLES, keystore.OPERATOR]}")
    check_expiry(expires_days=expires_days, timestamp_expires_days=timestamp_expires_days,
                 root_expires_days=root_expires_days)
    repo = Repository(repo_dir, keys_dir=keys_dir)
    with repo.lock():
        if not repo.exists():
            raise RepositoryStateError(f"{repo_dir}: no repository; publish a bundle first")
        root_md = repo.root()
        root = root_md.signed
        old_root_signers = keystore.load_signers(keys_dir=keys_dir, role="root", root=root)
        if role == keystore.OPERATOR:
            old, new_id = _rotate_operator(root, keys_dir=keys_dir, keyid=keyid)
        else:
            old, new_id = _rotate_role_key(root, role=role, keys_dir=keys_dir, keyid=keyid)
        root.version += 1
        root.expires = utc_in(days=root_expires_days)
        root_md.signatures.clear()
        # Signed by the old root keys (so devices trusting version N accept N+1) and by the new.
        for s in old_root_signers:
            root_md.sign(s, append=True)
        for s in keystore.load_signers(keys_dir=keys_dir, role="root", root=root):
            root_md.sign(s, append=True)
        repo.write_metadata(f"{root.version}.root.json", root_md)
        repo.write_metadata("root.json", root_md)
        if old:
            keystore.retire_key(keys_dir=keys_dir, role=role, keyid=old)
        repo.commit(targets=repo.targets(), root=root, expires_days=expires_days,
                    timestamp_expires_days=timestamp_expires_days)
        return old, new_id


def _rotate_role_key(root, *, role: str, keys_dir, keyid: str | None) -> tuple[str, str]:
    old_ids = list(root.roles[role].keyids)
    old = keyid or old_ids[0]
    if old not in old_ids:
        raise KeyStoreError(f"key {old} is not a {role!r} key (keys: {old_ids})")
    new = keystore.new_role_key(keys_dir=keys_dir, role=role)
    root.add_key(new.public_key, role)
    root.revoke_key(old, role)
    return old, new.public_key.keyid


def _rotate_operator(root, *, keys_dir, keyid: str | None) -> tuple[str, str]:
    """Replace the operator key listed in root (or add the first one, to a root made before
    the control plane was signed). Returns ``(old keyid or "", new keyid)``."""
    from runtime.contracts.mqtt.signing import OPERATOR_FIELD, OperatorKeys, keyid_of, public_raw

    listed = sorted(OperatorKeys.from_root({"signed": root.unrecognized_fields}).keys)
    old = keyid or (listed[0] if listed else "")
    if old and old not in listed:
        raise KeyStoreError(f"key {old} is not an operator key (keys: {listed})")
    if old and not (keystore.role_dir(Path(keys_dir), keystore.OPERATOR) / f"{old}.pem").exists():
        raise KeyStoreError(f"{keys_dir}: the private operator key {old[:12]} is not here; rotate from the "
                            f"key directory that holds it")
    new = keystore.new_operator_key(keys_dir=keys_dir)
    keep = OperatorKeys.from_root({"signed": root.unrecognized_fields}).keys
    pubs = [raw for kid, raw in sorted(keep.items()) if kid != old] + [public_raw(new)]
    root.unrecognized_fields[OPERATOR_FIELD] = OperatorKeys.root_field(pubs)
    return old, keyid_of(public_raw(new))


def refresh(*, repo_dir: str | os.PathLike, keys_dir: str | os.PathLike,
            timestamp_expires_days: float = 7.0, expires_days: float | None = None) -> int:
    """Re-sign the timestamp with a fresh expiry; returns the new timestamp version.

    With ``expires_days``, targets and snapshot are re-signed too (same targets, new
    versions and expiry; needs the targets key): the way to renew a repository whose
    targets or snapshot expire, or expired, without publishing a new bundle.
    """
    check_expiry(expires_days=expires_days, timestamp_expires_days=timestamp_expires_days)
    repo = Repository(repo_dir, keys_dir=keys_dir)
    with repo.lock():
        if not repo.exists():
            raise RepositoryStateError(f"{repo_dir}: no repository; publish a bundle first")
        if expires_days is None:
            return repo.refresh_timestamp(expires_days=timestamp_expires_days)
        repo.commit(targets=repo.targets(), root=repo.root().signed, expires_days=expires_days,
                    timestamp_expires_days=timestamp_expires_days)
        return repo.timestamp().signed.version


def list_targets(*, repo_dir: str | os.PathLike) -> list[dict]:
    """Published targets with their facts (for `edgeship repo list`)."""
    repo = Repository(repo_dir, keys_dir=".")
    out = []
    for path, tf in sorted(repo.targets().signed.targets.items()):
        facts = ReleaseFacts.from_target(tf.unrecognized_fields)
        f = facts.fields if facts is not None else {}
        out.append({"target": path, "sha256": tf.hashes.get("sha256"), "bytes": tf.length,
                    "name": f.get("name"), "release": f.get("release"), "version": f.get("version"),
                    "engine": f.get("engine"), "precision": f.get("precision")})
    return out
