"""Small, crash-safe file helpers shared by the toolchain and the agent (stdlib only).

Atomic replace: write a temp file in the same directory, fsync it, ``os.replace`` it over
the target, fsync the directory. A reader sees the old file or the new one, never a mix.
:class:`AtomicFile` is the one implementation; :func:`atomic_write_bytes` and
:func:`atomic_write_json` are its short forms.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass  # not Linux: assume the common default
    return 0o022


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file that appears complete or not at all: written to a temp file in ``directory``,
    then :meth:`commit` fsyncs it, renames it to its final path (in the same directory) and
    fsyncs the directory. Leaving the ``with`` block without a commit deletes the temp file.

    ``mode``: the file's permission bits (default 0o666 less the umask). A secret passes
    0o600, so the file is never readable by others, not even between the write and a chmod.
    """

    def __init__(self, directory: str | os.PathLike, *, mode: int | None = None, prefix: str = ".tmp.") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.directory)
        self.temp_path = Path(tmp)
        try:
            # mkstemp makes 0600; without a mode give the file ordinary permissions
            os.fchmod(fd, 0o666 & ~current_umask() if mode is None else mode)
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.temp_path.unlink(missing_ok=True)
            raise
        self.committed: Path | None = None

    def sync(self) -> None:
        """Flush and fsync what was written so far (e.g. before hashing :attr:`temp_path`)."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def commit(self, path: str | os.PathLike) -> Path:
        """Make the file ``path`` (which must be in :attr:`directory`), durably."""
        self.commit_before_dir_sync(path)
        fsync_dir(self.directory)
        return self.committed

    def commit_before_dir_sync(self, path: str | os.PathLike) -> Path:
        """Like :meth:`commit` but without the directory fsync: the file is complete or absent
        at ``path``, and the rename itself is durable only once the caller fsyncs the directory
        (e.g. its next :meth:`commit` or atomic write there). For many small files followed by
        one index write (the capture store): one directory fsync instead of one per file."""
        path = Path(path)
        if path.parent.resolve() != self.directory.resolve():
            raise ValueError(f"{path}: an atomic rename stays in {self.directory}")
        self.sync()
        self.file.close()
        os.replace(self.temp_path, path)
        self.committed = path
        return path

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.committed is None:
            self.file.close()
            self.temp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :class:`AtomicFile`)."""
    path = Path(path)
    with AtomicFile(path.parent, mode=mode, prefix=f".{path.name}.") as f:
        f.file.write(data)
        f.commit(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def file_entry(root: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"}`` for a file, its path relative to ``root``."""
    p = Path(path)
    return {
        "path": p.relative_to(root).as_posix(),
        "sha256": sha256_file(p),
        "bytes": p.stat().st_size,
    }
