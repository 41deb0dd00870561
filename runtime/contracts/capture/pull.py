"""The capture pull protocol between ``edgeship fleet capture pull`` and a device.

Topics (catalogue rows ``CAPTURE_PULL`` and ``CAPTURE_DATA``, runtime.contracts.mqtt.messages):
``capture/pull`` (operator -> device, signed like every operator row, not retained) and
``capture/data/{pull_id}`` (device -> operator, not retained, published directly: a lost
message is asked for again, never queued on the device's disk).

A pull is a sequence of *rounds*; each round is one signed :class:`PullRequest`:

1. the device deletes the captures listed in ``ack`` (the operator holds them verified and
   durably written), then
2. answers an ``offer`` listing (oldest first, at most ``max_files`` / ``max_bytes``) the
   captures it still holds at or after ``since_ms``, with each file's sha256, size and meta,
   and how many remain beyond this round, then
3. sends those files: over MQTT as ``chunk`` messages (``offset``, base64 ``data``; a file in
   ``resume`` starts at the given offset), or over HTTP as one ``PUT`` per file to ``url``
   (``{device}``, ``{fleet}``, ``{id}``, ``{pull_id}`` filled in; a pre-signed object-store URL
   template or any endpoint), each ``uploaded`` reported, then
4. ends the round with ``done`` (files sent; ``failed``: id -> why not sent; ``skipped``: id -> why
   an offered file is gone, e.g. evicted by the writer meanwhile).

The operator writes every complete file whose sha256 matches the offer, commits its index,
and acks those files in the next round. Any message lost (a broker restart, an agent
restart) only makes the operator ask again: a file is written once (by id, verified), deleted
on the device only after it was acked, so nothing is duplicated or lost. A pull ends with a
round that offers nothing and remains 0, after its acks.

Pure: builders and strict parsers (raise :class:`PayloadRejected` with ``payload.schema``).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import PayloadRejected

#: raw bytes per MQTT chunk by default (base64 adds a third; mosquitto's sample limit is 256 KiB)
CHUNK_BYTES = 96 * 1024
MAX_CHUNK_BYTES = 160 * 1024
#: files per round at most (an offer lists them; acks name them: both stay small)
MAX_FILES = 64
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Transport(str, enum.Enum):
    MQTT = "mqtt"
    HTTP = "http"


class DataType(str, enum.Enum):
    OFFER = "offer"
    CHUNK = "chunk"
    UPLOADED = "uploaded"
    DONE = "done"
    REFUSED = "refused"


def _bad(detail: str) -> PayloadRejected:
    return PayloadRejected("payload.schema", f"capture pull: {detail}")


def _ids(v: Any, what: str) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > MAX_FILES or not all(isinstance(x, str) and _ID.match(x) for x in v):
        raise _bad(f"{what} must be a list of at most {MAX_FILES} capture ids")
    return tuple(v)


def _int(d: Mapping[str, Any], key: str, *, lo: int, hi: int | None = None, default: int | None = None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise _bad(f"{key} must be an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    return v


@dataclass(frozen=True)
class PullRequest:
    pull_id: str
    since_ms: int | None = None
    transport: Transport = Transport.MQTT
    url: str | None = None
    ack: tuple[str, ...] = ()
    resume: Mapping[str, int] = field(default_factory=dict)
    max_files: int = 16
    max_bytes: int = 8 << 20
    chunk_bytes: int = CHUNK_BYTES

    def to_json(self) -> dict[str, Any]:
        return {"pull_id": self.pull_id, "since_ms": self.since_ms, "transport": self.transport.value,
                "url": self.url, "ack": list(self.ack), "resume": dict(self.resume), "max_files": self.max_files,
                "max_bytes": self.max_bytes, "chunk_bytes": self.chunk_bytes}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PullRequest":
        """Strict enough to act on (unknown keys ignored, as for every inbound document).

        Raises: PayloadRejected (payload.schema) naming the field.
        """
        pid = d.get("pull_id")
        if not isinstance(pid, str) or not _ID.match(pid):
            raise _bad(f"pull_id {pid!r} is not an id")
        try:
            transport = Transport(d.get("transport", "mqtt"))
        except ValueError:
            raise _bad(f"transport {d.get('transport')!r} is not one of {[t.value for t in Transport]}") from None
        url = d.get("url")
        if transport is Transport.HTTP and (not isinstance(url, str) or not re.match(r"^https?://", url)):
            raise _bad("transport http needs url, an http:// or https:// URL template")
        since = d.get("since_ms")
        if since is not None:
            since = _int(d, "since_ms", lo=0)
        resume = d.get("resume") or {}
        if not isinstance(resume, dict) or len(resume) > MAX_FILES or not all(
                isinstance(k, str) and _ID.match(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in resume.items()):
            raise _bad("resume must map capture ids to byte offsets")
        return cls(pull_id=pid, since_ms=since, transport=transport, url=url if transport is Transport.HTTP else None,
                   ack=_ids(d.get("ack", []), "ack"), resume=dict(resume),
                   max_files=_int(d, "max_files", lo=0, hi=MAX_FILES, default=16),
                   max_bytes=_int(d, "max_bytes", lo=1, default=8 << 20),
                   chunk_bytes=_int(d, "chunk_bytes", lo=1024, hi=MAX_CHUNK_BYTES, default=CHUNK_BYTES))


def fill_url(template: str, *, fleet: str, device: str, capture_id: str, pull_id: str) -> str:
    """The upload URL of one file (placeholders ``{fleet}``, ``{device}``, ``{id}``, ``{pull_id}``)."""
    return (template.replace("{fleet}", fleet).replace("{device}", device).replace("{id}", capture_id)
            .replace("{pull_id}", pull_id))


# ------------------------------------------------------------------ device -> operator
def offer(*, pull_id: str, files: list[Mapping[str, Any]], remaining: int, deleted: list[str],
          usage: Mapping[str, Any]) -> dict:
    """``files``: ``{"id", "path", "sha256", "bytes", "meta"}`` per capture (an index entry)."""
    return {"type": DataType.OFFER.value, "pull_id": pull_id, "files": [dict(f) for f in files],
            "remaining": remaining, "deleted": list(deleted), "store": dict(usage)}


def chunks(*, pull_id: str, capture_id: str, data: bytes, offset: int, chunk_bytes: int) -> list[dict]:
    """``data`` from ``offset`` in chunk messages; each names the file's total size and sha256."""
    sha, total = hashlib.sha256(data).hexdigest(), len(data)
    starts = list(range(offset, total, chunk_bytes)) or [total]
    return [{"type": DataType.CHUNK.value, "pull_id": pull_id, "id": capture_id, "offset": s, "bytes": total,
             "sha256": sha, "data": base64.b64encode(data[s:s + chunk_bytes]).decode()} for s in starts]


def uploaded(*, pull_id: str, capture_id: str, status: int | None, error: str | None) -> dict:
    return {"type": DataType.UPLOADED.value, "pull_id": pull_id, "id": capture_id, "status": status, "error": error}


def done(*, pull_id: str, sent: int, failed: Mapping[str, str], skipped: Mapping[str, str] | None = None) -> dict:
    """The end of a round: ``failed`` (id -> why) files not sent because of a problem, ``skipped``
    (id -> why) offered files the device removed before sending them (evicted meanwhile)."""
    return {"type": DataType.DONE.value, "pull_id": pull_id, "sent": sent, "failed": dict(failed),
            "skipped": dict(skipped or {})}


def refused(*, pull_id: str, reason_code: str, detail: str) -> dict:
    return {"type": DataType.REFUSED.value, "pull_id": pull_id, "reason_code": reason_code, "detail": detail}


class FileAssembly:
    """The chunks of one offered file, in any order, verified against the offer's hash."""

    def __init__(self, capture_id: str, *, sha256: str, size: int, start: bytes = b"") -> None:
        self.capture_id, self.sha256, self.size = capture_id, sha256, size
        self._parts: dict[int, bytes] = {0: start} if start else {}

    def add(self, doc: Mapping[str, Any]) -> None:
        """Raises PayloadRejected: a chunk of another file version (size/hash), bad base64."""
        if doc.get("sha256") != self.sha256 or doc.get("bytes") != self.size:
            raise _bad(f"chunk of {self.capture_id} names another file (sha256/bytes differ from the offer)")
        off = _int(doc, "offset", lo=0, hi=self.size)
        try:
            self._parts[off] = base64.b64decode(str(doc.get("data", "")), validate=True)
        except ValueError as e:
            raise _bad(f"chunk of {self.capture_id} at {off}: data is not base64: {e}") from e

    def contiguous(self) -> int:
        """Bytes received without a gap from offset 0 (where a resume starts)."""
        at = 0
        while at in self._parts and self._parts[at]:
            at += len(self._parts[at])
        return min(at, self.size)

    def complete(self) -> bytes | None:
        """The file when every byte arrived and its sha256 matches, else None."""
        if self.contiguous() < self.size:
            return None
        at, out = 0, []
        while at < self.size:
            out.append(self._parts[at])
            at += len(self._parts[at])
        data = b"".join(out)[:self.size]
        return data if hashlib.sha256(data).hexdigest() == self.sha256 else None
