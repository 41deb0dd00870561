"""TUF role keys on disk: create them, load signers for a role, rotate one role's keys.

Root and targets keys live under ``offline/`` and snapshot/timestamp keys under ``online/``
so an operator can move the offline half to cold storage: publishing a bundle needs the
targets key plus the online keys; a root or key change needs the root keys.
Private keys are PEM PKCS8 Ed25519 files, mode 0600, named by key id.

The **operator key** (``online/operator/``) signs the control plane (desired state and
commands over MQTT, ``runtime.contracts.mqtt.signing``); its public part is listed in
root.json under ``x-edgeship-operator``, so a device gets it with its trust root and a
rotation reaches devices the way a new root does. Its key id is the sha256 of the raw
public key (the contract's, not TUF's).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runtime.fsutil import atomic_write_bytes

from .errors import KeyStoreError, OtaPublishError

ROLES = ("root", "targets", "snapshot", "timestamp")
OFFLINE_ROLES = ("root", "targets")
#: the control-plane signing key: not a TUF role, listed in root.json beside them
OPERATOR = "operator"


@dataclass(frozen=True)
class RolePolicy:
    """How many keys a role has and how many must sign."""

    keys: int = 1
    threshold: int = 1

    def __post_init__(self) -> None:
        if self.keys < 1 or not 1 <= self.threshold <= self.keys:
            raise KeyStoreError(
                f"a role needs 1 <= threshold <= keys, got keys={self.keys} threshold={self.threshold}"
            )


def role_dir(keys_dir: Path, role: str) -> Path:
    return Path(keys_dir) / ("offline" if role in OFFLINE_ROLES else "online") / role


def _write_private(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic_write_bytes(path, pem, mode=0o600)  # created 0600: never readable by others, not even briefly


def _new_signer():
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner.generate_ed25519()


def init_keys(
    *,
    keys_dir: str | os.PathLike,
    policies: dict[str, RolePolicy] | None = None,
    root_expires_days: float = 365.0,
) -> Path:
    """Create Ed25519 keys for every TUF role and a signed version-1 ``root.json``.

    Returns the path of ``root.json``.

    Raises:
        KeyStoreError: ``keys_dir`` already holds keys (never overwritten) or a bad policy.
    """
    from tuf.api.metadata import Metadata, Root

    check_expiry(root_expires_days=root_expires_days)
    keys_dir = Path(keys_dir)
    if (keys_dir / "root.json").exists() or (keys_dir / "offline").exists():
        raise KeyStoreError(f"{keys_dir}: already holds TUF keys; refusing to overwrite them")
    policies = {r: (policies or {}).get(r, RolePolicy()) for r in ROLES}
    root = Root(expires=utc_in(days=root_expires_days), consistent_snapshot=True)
    root_signers = []
    for role in ROLES:
        root.roles[role].threshold = policies[role].threshold
        for _ in range(policies[role].keys):
            signer = _new_signer()
            root.add_key(signer.public_key, role)
            _write_private(role_dir(keys_dir, role) / f"{signer.public_key.keyid}.pem", signer.private_bytes)
            if role == "root":
                root_signers.append(signer)
    operator = new_operator_key(keys_dir=keys_dir)
    set_operator_keys(root, [operator])
    md = Metadata(root)
    for s in root_signers:
        md.sign(s, append=True)
    out = keys_dir / "root.json"
    atomic_write_bytes(out, md.to_bytes(_pretty()))
    return out


def load_signers(*, keys_dir: str | os.PathLike, role: str, root) -> list:
    """Signers for ``role`` whose private keys are present, per the given ``Root``.

    Raises:
        KeyStoreError: fewer keys present than the role's threshold (names the directory).
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    d = role_dir(Path(keys_dir), role)
    signers = []
    for keyid in root.roles[role].keyids:
        p = d / f"{keyid}.pem"
        if p.exists():
            signers.append(CryptoSigner(load_pem_private_key(p.read_bytes(), None), root.keys[keyid]))
    need = root.roles[role].threshold
    if len(signers) < need:
        raise KeyStoreError(
            f"{d}: {len(signers)} of the {need} private key(s) needed to sign {role!r} are present; "
            f"copy them from offline storage (key ids {sorted(root.roles[role].keyids)})"
        )
    return signers


def new_role_key(*, keys_dir: str | os.PathLike, role: str):
    """Create and store one new key for ``role``; returns its signer."""
    signer = _new_signer()
    _write_private(role_dir(Path(keys_dir), role) / f"{signer.public_key.keyid}.pem", signer.private_bytes)
    return signer


def retire_key(*, keys_dir: str | os.PathLike, role: str, keyid: str) -> None:
    """Move a replaced private key to ``retired/<role>/`` (kept, never deleted, for audit)."""
    src = role_dir(Path(keys_dir), role) / f"{keyid}.pem"
    if src.exists():
        dst = Path(keys_dir) / "retired" / role / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dst)


def new_operator_key(*, keys_dir: str | os.PathLike):
    """Create and store a new operator key (Ed25519, PEM PKCS8, 0600); returns it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from runtime.contracts.mqtt.signing import keyid_of, public_raw

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    _write_private(role_dir(Path(keys_dir), OPERATOR) / f"{keyid_of(public_raw(key))}.pem", pem)
    return key


def set_operator_keys(root, private_keys: list) -> None:
    """List the public parts of ``private_keys`` as the operator keys of a TUF ``Root``."""
    from runtime.contracts.mqtt.signing import OPERATOR_FIELD, OperatorKeys, public_raw

    root.unrecognized_fields[OPERATOR_FIELD] = OperatorKeys.root_field([public_raw(k) for k in private_keys])


def load_operator_key(*, keys_dir: str | os.PathLike):
    """The operator's private key: the one ``.pem`` in ``KEYS/online/operator/``.

    Raises:
        KeyStoreError: none there (a key dir made before the control plane was signed: run
            ``edgeship keys rotate --role operator``), several, or an unreadable one.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    d = role_dir(Path(keys_dir), OPERATOR)
    found = sorted(d.glob("*.pem")) if d.is_dir() else []
    if len(found) != 1:
        raise KeyStoreError(
            f"{d}: {'no' if not found else len(found)} operator key(s); the control plane is signed with "
            f"exactly one (create it with `edgeship keys init`, or `edgeship keys rotate --role operator "
            f"--dir {keys_dir} --repo REPO` for a key directory made before)")
    try:
        key = load_pem_private_key(found[0].read_bytes(), None)
    except (ValueError, TypeError, OSError) as e:
        raise KeyStoreError(f"{found[0]}: not a readable PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError(f"{found[0]}: the operator key must be Ed25519")
    return key


def check_expiry(**days: float | None) -> None:
    """Refuse an expiry that is not in the future: every device would refuse the repository.

    Raises:
        OtaPublishError: naming the option, e.g. ``--expires-days must be > 0``.
    """
    for name, v in days.items():
        if v is not None and not v > 0:
            raise OtaPublishError(f"--{name.replace('_', '-')} must be > 0 (got {v}); metadata that "
                                  f"expires at once makes every device refuse the repository")


def utc_in(*, days: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)


def _pretty():
    from tuf.api.serialization.json import JSONSerializer

    return JSONSerializer(compact=False)
