"""A plain, uncompressed ``.npz`` written directly: the same file ``numpy.savez`` writes (a
ZIP archive of ``<name>.npy`` members, stored, no pickles), read back by ``numpy.load``, in a
fraction of the time (numpy's zipfile writer costs ~80 us for a small capture; the capture
writer pays it once per capture on the device).

Only what captures need: numeric arrays (no object dtypes), members and the whole file under
2 GiB (larger ones go through ``numpy.savez``, which writes ZIP64). Pure.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Mapping

import numpy as np

_NPY_MAGIC = b"\x93NUMPY\x01\x00"
# local file header (30 bytes) = <IHHHHH> + _SIZES + <HH>; central header (46) = <IHHHHHH> + _SIZES + _CEN_TAIL
_SIZES = struct.Struct("<III")                  # crc, compressed size, size
_CEN_TAIL = struct.Struct("<HHHHHII")
_END = struct.Struct("<IHHHHIIH")               # end of central directory (22 bytes)
_DOS_DATE = 0x21                                # 1980-01-01 (numpy.savez stamps the current time)
_SMALL = 1 << 31


_MEMBERS: dict[tuple, tuple | None] = {}  # a model's captures repeat their members


def _member(key: str, a: np.ndarray) -> tuple | None:
    """What member ``key`` holding ``a`` repeats from one capture to the next: ``(local header
    up to the crc, its tail + name + .npy header, central header up to the crc, name, .npy
    header size, its crc32)``; None: not for this writer (numpy.savez writes it)."""
    ck = (key, a.dtype, a.shape)
    got = _MEMBERS.get(ck, False)
    if got is not False:
        return got
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.lib.format.dtype_to_descr(a.dtype), a.shape)
    text += " " * (63 - (len(_NPY_MAGIC) + 2 + len(text)) % 64) + "\n"
    if len(text) > 0xFFFF or a.dtype.hasobject:
        got = None
    else:
        head = _NPY_MAGIC + struct.pack("<H", len(text)) + text.encode("latin1")
        name = f"{key}.npy".encode("utf-8")
        flags = 0 if name.isascii() else 0x800  # UTF-8 names, as zipfile marks them
        got = (struct.pack("<IHHHHH", 0x04034B50, 20, flags, 0, 0, _DOS_DATE),
               struct.pack("<HH", len(name), 0) + name + head,
               struct.pack("<IHHHHHH", 0x02014B50, 20, 20, flags, 0, 0, _DOS_DATE), name, len(head), zlib.crc32(head))
    if len(_MEMBERS) < 1024:
        _MEMBERS[ck] = got
    return got


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` of ``arrays`` (C-contiguous copies are made where needed)."""
    out: list = []
    central: list[bytes] = []
    offset = 0
    sizes = _SIZES.pack
    for key, value in arrays.items():
        a = np.asarray(value, order="C")
        m = None if a.nbytes >= _SMALL or offset >= _SMALL else _member(key, a)
        if m is None:
            return _savez(arrays)
        local, after, cen, name, head_len, head_crc = m
        n = a.nbytes  # the C-contiguous array is its own buffer: crc32 and join read it as bytes
        size = head_len + n
        triple = sizes(zlib.crc32(a, head_crc), size, size)
        out += [local, triple, after, a]
        central.append(cen + triple + _CEN_TAIL.pack(len(name), 0, 0, 0, 0, 0o600 << 16, offset) + name)
        offset += 26 + len(after) + n
    cd = b"".join(central)
    out += [cd, _END.pack(0x06054B50, 0, 0, len(central), len(central), len(cd), offset, 0)]
    return b"".join(out)


def _savez(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
