"""Disk space for an update: the preflight from the signed length, and what a full disk leaves.

An update needs room for the download and for the unpacked model at the same time: the
fetcher's partial file is copied out to ``update/downloads/<sha>.tar`` (two copies for a
moment), and the store unpacks that tar into ``tmp/`` before the download is deleted (the
tar and the model). So the preflight asks for ``2 x signed length + RESERVE_BYTES`` less
what of this download is already on disk, measured on the state dir's file system, and
refuses *before downloading* when that is not free (:class:`DiskFullError`, reason
``update.disk_full``).

When the disk fills anyway (another writer took the space meanwhile), the ``ENOSPC`` met in
any state becomes the same typed error: :func:`remove_partial` deletes this update's partial
and downloaded files (the store removes its own unpack directory), and the update fails like
any other, so the journal ends ``failed`` and the next update can run as soon as there is
room, without a restart. Pure arithmetic plus a few ``stat``/``unlink`` calls.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from runtime.contracts.statedir import StateDir

from .errors import DiskFullError

#: room kept free beyond the estimate (journal, metadata, the store's pointer file, logs)
RESERVE_BYTES = 1 << 20
_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(e: BaseException) -> bool:
    """True for an OSError saying the file system (or the quota) is full."""
    return isinstance(e, OSError) and e.errno in _FULL


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the file system holding ``path``."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def on_disk(paths: StateDir, sha256: str) -> int:
    """Bytes of this download already on disk (partial files and the copied-out tar)."""
    partial = paths.partial_downloads
    parts = sum(_size(p) for p in partial.glob("*.part")) if partial.is_dir() else 0
    return parts + _size(paths.download(sha256))


def needed_bytes(*, length: int, already: int) -> int:
    """Free bytes an update of a ``length``-byte bundle still needs (download + unpack + reserve)."""
    return max(0, 2 * length - already) + RESERVE_BYTES


def preflight(paths: StateDir, *, sha256: str, length: int, target: str) -> None:
    """Refuse an update that cannot fit, before downloading it.

    Raises:
        DiskFullError: fewer free bytes than :func:`needed_bytes` on the state dir's file system.
    """
    need = needed_bytes(length=length, already=on_disk(paths, sha256))
    free = free_bytes(paths.root)
    if free < need:
        raise DiskFullError(f"{target}: not enough disk space for the update: needs {need} bytes "
                            f"({length} to download, as much again to unpack, {RESERVE_BYTES} reserve), "
                            f"{free} free on {paths.root}; nothing was downloaded",
                            needed_bytes=need, free_bytes=free)


def remove_partial(paths: StateDir, sha256: str | None) -> int:
    """Delete this update's partial and downloaded files; returns the bytes freed."""
    victims = list(paths.partial_downloads.glob("*.part")) if paths.partial_downloads.is_dir() else []
    if sha256:
        victims.append(paths.download(sha256))
    freed = 0
    for p in victims:
        n = _size(p)
        try:
            os.unlink(p)
            freed += n
        except FileNotFoundError:
            pass
    return freed


def disk_full(paths: StateDir, *, state: str, sha256: str | None, length: int | None,
              cause: OSError) -> DiskFullError:
    """The typed error for an ``ENOSPC`` met in ``state``, after removing the partial files."""
    freed = remove_partial(paths, sha256)
    free = free_bytes(paths.root)
    need = needed_bytes(length=length or 0, already=0) if length else RESERVE_BYTES
    return DiskFullError(f"disk full while in {state} ({cause.strerror or cause}): the update needs about "
                         f"{need} bytes, {free} are free on {paths.root} after removing {freed} bytes of "
                         f"partial files; free some space and update again", needed_bytes=need, free_bytes=free)
