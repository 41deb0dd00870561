"""Nothing half-written: a converter writes into a scratch folder inside its ``out_dir`` and
moves the finished files into place (same file system, so each move is atomic)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def staging(out_dir: Path) -> Iterator[Path]:
    """A scratch folder inside ``out_dir`` (same file system, so the final move is atomic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, out_dir: Path, names: tuple[str, ...]) -> None:
    """Move ``names`` from ``stage`` into ``out_dir``, in that order (a file naming another goes last)."""
    for name in names:
        os.replace(stage / name, out_dir / name)
