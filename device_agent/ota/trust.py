"""Trusted metadata and downloads through ``tuf.ngclient``, plus the device's trusted time.

ngclient does the TUF client workflow (root rotation, signatures and thresholds, version
rollback, expiry, snapshot/targets hashes, target length and hashes). This module adds:

- **Trusted time.** ngclient checks expiry against the wall clock read when its
  ``TrustedMetadataSet`` is created. A device without an RTC, or whose clock was set back,
  would accept metadata that expired long ago. We persist the latest clock reading seen
  at each refresh (``update/trusted_time.json``) and use ``max(now, persisted)`` as the
  reference time: ngclient 7 keeps it in ``TrustedMetadataSet.reference_time`` (set right
  after construction, before any metadata is loaded), and after the refresh we check the
  top-level expiries again ourselves through the public ``Signed.is_expired``, so a change
  in that private attribute cannot silently turn the check off.
- **Target listing.** ngclient looks targets up by exact path only; a device asks for "the
  newest release of model M", so we read the verified top-level targets from the trusted set.
- **Typed errors.** ngclient's exceptions become ours (``errors.py``), ``from`` the original.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from runtime.contracts.release import ReleaseFacts
from runtime.fsutil import atomic_write_json

from .diskspace import is_disk_full
from .errors import (
    BadSignatureError, EndlessDataError, ExpiredMetadataError, FetchError, MetadataRollbackError,
    SecurityError, TamperedTargetError, UpdateError,
)
from .fetcher import ResumableFetcher


@dataclass(frozen=True)
class Candidate:
    """A signed target for a model, with the facts its publisher signed in."""

    target_path: str
    sha256: str
    length: int
    facts: ReleaseFacts

    @property
    def release(self) -> int:
        return self.facts.release


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def repo_urls(repository: str) -> tuple[str, str]:
    """(metadata base URL, targets base URL) for an http(s) URL or a local directory."""
    u = urlparse(repository)
    if u.scheme in ("http", "https", "file"):
        base = repository.rstrip("/")
    else:
        base = Path(repository).resolve().as_uri()
    return f"{base}/metadata/", f"{base}/targets/"


class TrustedTime:
    """The latest clock reading this device has seen, persisted so it never goes back."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow) -> None:
        self.path, self.clock = path, clock

    def persisted(self) -> datetime | None:
        try:
            return datetime.fromisoformat(json.loads(self.path.read_text())["utc"])
        except (FileNotFoundError, KeyError, ValueError, json.JSONDecodeError):
            return None

    def reference(self) -> tuple[datetime, bool]:
        """``(max(now, persisted), clock_went_back)``."""
        now, last = self.clock(), self.persisted()
        if last is not None and last > now:
            return last, True
        return now, False

    def record(self) -> None:
        ref, _ = self.reference()
        atomic_write_json(self.path, {"utc": ref.isoformat()})


class TrustedRepo:
    """One refresh + lookups + downloads against one repository (create a new one per update)."""

    def __init__(self, *, repository: str, root_json: Path, metadata_dir: Path, download_dir: Path,
                 partial_dir: Path, trusted_time: TrustedTime, timeout_s: float = 30.0) -> None:
        from tuf.ngclient import Updater as NgUpdater

        self.metadata_url, self.targets_url = repo_urls(repository)
        self.download_dir = download_dir
        self.time = trusted_time
        self.fetcher = ResumableFetcher(partial_dir=partial_dir, timeout_s=timeout_s)
        metadata_dir.mkdir(parents=True, exist_ok=True)
        download_dir.mkdir(parents=True, exist_ok=True)
        try:
            bootstrap = root_json.read_bytes()
        except FileNotFoundError:
            raise BadSignatureError(f"{root_json}: no trusted root.json; provision the device with the "
                                    f"repository's root.json (edgeship keys init writes it)") from None
        with _mapped(f"trusted root {root_json}"):
            self._ng = NgUpdater(str(metadata_dir), self.metadata_url, str(download_dir), self.targets_url,
                                 fetcher=self.fetcher, bootstrap=bootstrap)
        self.reference_time, self.clock_went_back = trusted_time.reference()
        ts = getattr(self._ng, "_trusted_set", None)
        if ts is not None and hasattr(ts, "reference_time"):
            ts.reference_time = self.reference_time

    def refresh(self) -> None:
        """Fetch and verify root, timestamp, snapshot, targets.

        Raises:
            BadSignatureError, MetadataRollbackError, ExpiredMetadataError, EndlessDataError,
            TamperedTargetError, SecurityError, FetchError.
        """
        try:
            with _mapped(self.metadata_url, clock_went_back=self.clock_went_back, ref=self.reference_time):
                self._ng.refresh()
        finally:
            self.time.record()
        for role in ("timestamp", "snapshot", "targets"):
            signed = self._trusted(role)
            if signed.is_expired(self.reference_time):
                raise ExpiredMetadataError(_expired_msg(role, signed.expires, self.reference_time,
                                                        self.clock_went_back))

    def _trusted(self, role: str):
        # the verified Signed object of a top-level role (ngclient has no public target listing)
        return self._ng._trusted_set[role]

    def candidates(self, model: str) -> list[Candidate]:
        """Signed targets whose facts name ``model``, newest release first."""
        out = []
        for path, tf in self._trusted("targets").targets.items():
            facts = ReleaseFacts.from_target(tf.unrecognized_fields)
            if facts is not None and facts.name == model and "sha256" in tf.hashes:
                out.append(Candidate(path, tf.hashes["sha256"], tf.length, facts))
        return sorted(out, key=lambda c: -c.release)

    def download(self, c: Candidate) -> Path:
        """Download (resuming) and verify a target; returns the local file.

        Raises:
            TamperedTargetError, EndlessDataError, FetchError, SecurityError.
        """
        info = self._ng.get_targetinfo(c.target_path)
        if info is None or info.hashes.get("sha256") != c.sha256:
            raise SecurityError(f"{c.target_path}: no longer signed as {c.sha256[:12]}")
        dest = self.download_dir / f"{c.sha256}.tar"
        cached = self._ng.find_cached_target(info, str(dest))
        if cached:
            return Path(cached)
        with _mapped(f"{self.targets_url}{c.target_path}"):
            return Path(self._ng.download_target(info, str(dest)))

    def verify_file(self, c: Candidate, path: Path) -> None:
        """Re-check a downloaded file against the signed length and hashes (after a restart)."""
        from tuf.api import exceptions

        info = self._ng.get_targetinfo(c.target_path)
        try:
            with open(path, "rb") as f:
                info.verify_length_and_hashes(f)
        except (OSError, exceptions.LengthOrHashMismatchError, AttributeError) as e:
            raise TamperedTargetError(f"{path}: does not match the signed target {c.target_path}: {e}") from e


def _expired_msg(role: str, expires: datetime, ref: datetime, went_back: bool) -> str:
    msg = f"{role} metadata expired at {expires.isoformat()} (trusted time {ref.isoformat()})"
    if went_back:
        msg += "; the device clock is behind the latest trusted time (clock stepped back), still refusing"
    return msg


class _mapped:
    """Context manager: re-raise tuf errors as ours, naming what was being fetched."""

    def __init__(self, what: str, *, clock_went_back: bool = False, ref: datetime | None = None) -> None:
        self.what, self.went_back, self.ref = what, clock_went_back, ref

    def __enter__(self) -> None:
        return None

    def __exit__(self, et, e, tb) -> bool:
        if e is None or isinstance(e, UpdateError):
            return False
        from tuf.api import exceptions as x

        table = [
            (x.UnsignedMetadataError, BadSignatureError, "signatures do not verify (wrong, missing or too few)"),
            (x.BadVersionNumberError, MetadataRollbackError, "older than the trusted version (replay/rollback)"),
            (x.ExpiredMetadataError, ExpiredMetadataError, "expired"),
            (x.DownloadLengthMismatchError, EndlessDataError, "more data than the signed length"),
            (x.LengthOrHashMismatchError, TamperedTargetError, "length or hash differs from the signed one"),
            (x.RepositoryError, SecurityError, "failed verification"),
            (x.DownloadError, FetchError, "download failed"),
        ]
        for tuf_cls, ours, what in table:
            if isinstance(e, tuf_cls):
                msg = f"{self.what}: {what}: {e}"
                if ours is ExpiredMetadataError and self.went_back:
                    msg += (f" (trusted time {self.ref.isoformat() if self.ref else '?'}: the device clock "
                            f"stepped back, still refusing)")
                raise ours(msg) from e
        if isinstance(e, OSError) and not is_disk_full(e):  # a full disk: the updater's update.disk_full
            raise FetchError(f"{self.what}: {e}") from e
        return False
