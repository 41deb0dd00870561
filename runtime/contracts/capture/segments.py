"""Segment files of a capture set (index schema ``edgeship.capture-set/2``): many captures in
one append-only file, so that the device's writer appends a capture instead of creating,
fsyncing and renaming one file per capture.

A segment ``<name>.seg`` (top level of the set) is a sequence of records, each a 16-byte
header then the payload::

    b"ESCR" | u8 version (1) | u8 flags | 2 zero bytes | u64 payload length (little endian)
    payload: one capture's .npz, byte for byte the standalone file it would be

Flag ``ERASED`` (1): the capture was removed (evicted, expired, pulled); its payload was
overwritten with zeros. An index entry of a segmented capture names the segment and the
offset of its payload (after the header); its ``sha256``/``bytes`` are the payload's, so the
pull sends the payload as the standalone ``<id>.npz`` and the operator verifies it as usual.

A record appended but not yet listed (a crash between the append and the next index write)
is complete or cut short: :func:`scan` returns the complete ones and where a cut-off tail
starts. Pure except :func:`scan`, which reads from a file object.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"ESCR"
VERSION = 1
ERASED = 1
HEADER = struct.Struct("<4sBBxxQ")
SEG_SUFFIX = ".seg"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.seg$")


def header(length: int, *, erased: bool = False) -> bytes:
    return HEADER.pack(MAGIC, VERSION, ERASED if erased else 0, length)


def frame(payload: bytes) -> bytes:
    """One record: the header and ``payload``."""
    return header(len(payload)) + payload


def is_segment_name(name: object) -> bool:
    """A top-level ``<name>.seg`` (letters, digits, ``.``, ``_``, ``-``)."""
    return isinstance(name, str) and bool(_NAME.match(name))


@dataclass(frozen=True)
class Record:
    offset: int      # where the payload starts (the index entry's offset)
    length: int
    erased: bool

    @property
    def header_at(self) -> int:
        return self.offset - HEADER.size


def scan(f: BinaryIO, size: int) -> tuple[list[Record], int]:
    """The complete records of a segment of ``size`` bytes, and where its complete part ends
    (``size`` unless the last record is cut short or the bytes stop being records)."""
    out: list[Record] = []
    at = 0
    while at + HEADER.size <= size:
        f.seek(at)
        raw = f.read(HEADER.size)
        if len(raw) < HEADER.size:
            break
        magic, version, flags, length = HEADER.unpack(raw)
        end = at + HEADER.size + length
        if magic != MAGIC or version != VERSION or end > size:
            break
        out.append(Record(at + HEADER.size, length, bool(flags & ERASED)))
        at = end
    return out, at
