"""The build manifest (docs/design.md, schema_version 1) and the crash-safe build directory.

Invariant: ``<out>/<model>/manifest.json`` only ever describes files that exist complete.
A build is assembled in ``<out>/.<model>.staging-<pid>/``; its manifest is written there last
(atomically); then the staging dir is swapped in with two renames (old -> trash, staging ->
final) and the trash removed. An interruption at any point leaves either the old complete
build, the new complete build, or no build dir at all; leftovers are hidden dot-dirs that the
next build removes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from runtime.fsutil import atomic_write_json, file_entry, fsync_dir

from ..errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class BuildStatus:
    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"


class ArtifactStatus:
    OK = "ok"
    FAILED = "failed"
    GATE_FAILED = "gate_failed"


def read_manifest(build_dir: Path) -> tuple[dict[str, Any], bytes]:
    """The manifest of ``build_dir`` (parsed, and its raw bytes for hashing).

    Raises:
        ManifestError: no manifest.json, unreadable or not JSON, or a schema version this
            edgeship does not read.
    """
    path = Path(build_dir) / MANIFEST
    try:
        raw = path.read_bytes()
        man = json.loads(raw)
    except FileNotFoundError as e:
        raise ManifestError(f"{build_dir}: not a build directory (no {MANIFEST}); run `edgeship compile` "
                            "first") from e
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from e
    if not isinstance(man, dict) or man.get("schema_version") != SCHEMA_VERSION:
        v = man.get("schema_version") if isinstance(man, dict) else None
        raise ManifestError(f"{path}: manifest schema_version {v!r} is not supported "
                            f"(this edgeship reads {SCHEMA_VERSION})")
    return man, raw


def staging_dir(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}.staging-{os.getpid()}"


def clean_leftovers(out_dir: Path, name: str) -> None:
    """Remove staging/trash dirs left by interrupted builds of ``name`` (not those of a build
    that is still running in another process)."""
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        for prefix in (f".{name}.staging-", f".{name}.trash-"):
            if p.is_dir() and p.name.startswith(prefix) and not _alive(p.name[len(prefix):]):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid_text: str) -> bool:
    """True when ``pid_text`` names another live process."""
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def files_of(root: Path) -> list[dict[str, Any]]:
    """``{path, sha256, bytes}`` for every file under ``root`` (sorted)."""
    return [file_entry(root, p) for p in sorted(root.rglob("*")) if p.is_file()]


def build_status(artifacts: list[dict]) -> str:
    states = [a["status"] for a in artifacts]
    if not states or ArtifactStatus.GATE_FAILED in states or all(s != ArtifactStatus.OK for s in states):
        return BuildStatus.FAILED
    if any(s != ArtifactStatus.OK for s in states):
        return BuildStatus.PARTIAL
    return BuildStatus.OK


def exit_code(status: str) -> int:
    return {BuildStatus.OK: 0, BuildStatus.PARTIAL: 3, BuildStatus.FAILED: 1}[status]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def finalize(staging: Path, final: Path, manifest: dict) -> None:
    """Write the manifest last inside ``staging`` and swap it in for ``final``."""
    atomic_write_json(staging / MANIFEST, manifest)
    trash = final.parent / f".{final.name}.trash-{os.getpid()}"
    if final.exists():
        os.replace(final, trash)
    os.replace(staging, final)
    fsync_dir(final.parent)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
