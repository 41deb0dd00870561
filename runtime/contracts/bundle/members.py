"""The bundle's tar headers, checked before anything is unpacked, and reading ``model.json``
out of a bundle file.

:func:`check_members` is pure (tar headers in, an error out); :func:`read_bundle_info` reads
``model.json`` without unpacking anything (the publisher and the device need it before
anything else).
"""

from __future__ import annotations

import os
import tarfile
from typing import Iterable

from ..errors import BundleError
from .schema import MAX_MODEL_JSON_BYTES, MODEL_JSON, BundleInfo, check_member_name


def check_members(members: Iterable[tarfile.TarInfo], info: BundleInfo | None = None,
                  *, where: str = "bundle", max_total_bytes: int | None = None) -> None:
    """Check a bundle's tar headers: regular files only, safe names, no duplicates, and
    (given ``info``) exactly the files model.json lists, with their sizes.

    Raises:
        BundleError: a link, device, directory or other special member; an unsafe or
            duplicate name; a member model.json does not list or a listed file missing;
            a size that differs from model.json; more than ``max_total_bytes`` in total.
    """
    seen: dict[str, int] = {}
    total = 0
    for m in members:
        check_member_name(m.name, where=where)
        if not m.isreg():
            kind = "symlink" if m.issym() else "hard link" if m.islnk() else "directory" if m.isdir() else "special file"
            raise BundleError(f"{where}: member {m.name!r} is a {kind}; bundles hold regular files only")
        if m.name in seen:
            raise BundleError(f"{where}: member {m.name!r} appears twice")
        seen[m.name] = m.size
        total += m.size
        if max_total_bytes is not None and total > max_total_bytes:
            raise BundleError(f"{where}: unpacked size passes the limit of {max_total_bytes} bytes")
    if MODEL_JSON not in seen:
        raise BundleError(f"{where}: no {MODEL_JSON}; not an edgeship bundle")
    if info is None:
        return
    listed = {f.path: f.bytes for f in info.files}
    unexpected = sorted(set(seen) - set(listed) - {MODEL_JSON})
    missing = sorted(set(listed) - set(seen))
    if unexpected or missing:
        raise BundleError(f"{where}: members differ from {MODEL_JSON}"
                          + (f"; unexpected {unexpected}" if unexpected else "")
                          + (f"; missing {missing}" if missing else ""))
    for path, size in listed.items():
        if seen[path] != size:
            raise BundleError(f"{where}: {path!r} is {seen[path]} bytes, {MODEL_JSON} says {size}")


def read_bundle_info(path: str | os.PathLike) -> BundleInfo:
    """Read and check ``model.json`` from a bundle file without unpacking anything.

    Raises:
        BundleError: not a tar, no/oversized/invalid model.json, or members that differ from it.
        OSError: the file cannot be read.
    """
    where = os.fspath(path)
    try:
        with tarfile.open(path, mode="r:") as tf:
            members = tf.getmembers()
            check_members(members, where=where)
            m = next(m for m in members if m.name == MODEL_JSON)
            if m.size > MAX_MODEL_JSON_BYTES:
                raise BundleError(f"{where}: {MODEL_JSON} is {m.size} bytes, over {MAX_MODEL_JSON_BYTES}")
            data = tf.extractfile(m).read()  # type: ignore[union-attr]
    except tarfile.TarError as e:
        raise BundleError(f"{where}: not a readable uncompressed tar: {e}") from e
    info = BundleInfo.from_bytes(data, where=f"{where}:{MODEL_JSON}")
    check_members(members, info, where=where)
    return info
