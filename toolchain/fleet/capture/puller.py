"""The operator's side of a capture pull (protocol: runtime.contracts.capture.pull).

One :class:`DevicePull` runs the rounds for one device into a shared output set
(:class:`toolchain.data.captures.SetWriter`, files under ``<out>/<device>/``): send a signed
round request (acks of what is safely written, resume offsets of partial files), collect
the offer and the files (MQTT chunks, or HTTP uploads fetched back from ``fetch_url``),
write each complete file whose sha256, size and meta match the offer, commit the index, and
ack them in the next round. A round that stalls (no message for ``stall_s``: a broker or
agent restart, a lost chunk) is asked again on a fresh connection; files already in the
output set are never written twice (acked instead), and the device deletes only acked
files, so an interrupted pull resumes without duplicates or losses. Resuming into an
existing output directory is allowed for the same reason. A file the device reports in
``done.skipped`` (evicted by its writer after the offer) is counted in ``stats.skipped``, not
as a failure, and not asked for again: it is gone, and the output set has no entry for it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from runtime.contracts.capture import fileformat as ff
from runtime.contracts.capture import pull as proto
from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt.messages import MESSAGES, Kind
from runtime.contracts.mqtt.signing import Addressee
from runtime.contracts.mqtt.topics import device_topics

from ..errors import BrokerUnavailableError, FleetError


class PullRefusedError(FleetError):
    """The device refused the pull (capture off, a bad or unauthenticated request)."""


@dataclass
class PullStats:
    device: str
    rounds: int = 0
    files: int = 0
    bytes: int = 0
    samples: int = 0
    already_had: int = 0        # offered again (an ack lost in an interruption): acked, not written twice
    retries: int = 0            # rounds asked again after a stall
    resumed_files: int = 0      # files continued from an offset
    bad_files: int = 0          # complete files whose hash did not match: asked again
    acked: int = 0
    seconds: float = 0.0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    failed: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # offered, then gone on the device before sent (evicted): not lost

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PullOptions:
    transport: proto.Transport = proto.Transport.MQTT
    upload_url: str | None = None     # template the device PUTs to (http)
    fetch_url: str | None = None      # template this side GETs the upload back from (default upload_url)
    since_ms: int | None = None
    max_files: int = 16
    chunk_bytes: int = proto.CHUNK_BYTES
    stall_s: float = 10.0
    timeout_s: float = 600.0
    request_expiry_s: float = 60.0


class DevicePull:
    def __init__(self, *, connect: Callable[[], Any], signer: Any, fleet: str, device: str, prefix: str,
                 writer: Any, options: PullOptions, progress: Callable[[str], None] | None = None,
                 on_data: Callable[[dict], None] | None = None) -> None:
        """``on_data(doc)`` sees every message of this pull as it arrives (progress, tests)."""
        self._connect, self.signer, self.fleet, self.device = connect, signer, fleet, device
        self.topics = device_topics(fleet=fleet, device=device, prefix=prefix)
        self.writer, self.opts = writer, options
        self.progress = progress or (lambda s: None)
        self.on_data = on_data
        self.pull_id = f"pull-{uuid.uuid4().hex[:12]}"
        self.stats = PullStats(device=device)
        self._have = {e.meta.id for e in writer.entries.values() if e.meta.device == device}
        self._pending_ack: list[str] = []
        self._partial: dict[str, proto.FileAssembly] = {}

    # ------------------------------------------------------------ the rounds
    def run(self) -> PullStats:
        """Pull until the device offers nothing more. Raises PullRefusedError, FleetError (timeout)."""
        t0 = time.monotonic()
        deadline = t0 + self.opts.timeout_s
        fc = None
        try:
            while True:
                if time.monotonic() > deadline:
                    raise FleetError(f"capture pull from {self.fleet}/{self.device}: not finished within "
                                     f"{self.opts.timeout_s:.0f} s ({self.stats.files} files received)")
                if fc is None:
                    fc = self._connect_retrying(deadline)
                finished = self._round(fc)
                if finished is None:  # stalled: a fresh connection, the same acks and offsets again
                    self.stats.retries += 1
                    self.progress(f"{self.device}: round stalled, asking again "
                                  f"({len(self._pending_ack)} acks, {len(self._partial)} partial files)")
                    _close(fc)
                    fc = None
                elif finished:
                    return self.stats
        finally:
            _close(fc)
            self.stats.seconds = round(time.monotonic() - t0, 3)

    def _connect_retrying(self, deadline: float):
        delay = 0.2
        while True:
            try:
                fc = self._connect()
                fc.subscribe(self.topics.of(Kind.CAPTURE_DATA, id=self.pull_id))
                return fc
            except BrokerUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _request(self) -> proto.PullRequest:
        resume = {cid: a.contiguous() for cid, a in self._partial.items() if a.contiguous() > 0}
        upload = self.opts.upload_url if self.opts.transport is proto.Transport.HTTP else None
        return proto.PullRequest(pull_id=self.pull_id, since_ms=self.opts.since_ms, transport=self.opts.transport,
                                 url=upload, ack=tuple(self._pending_ack[:proto.MAX_FILES]), resume=resume,
                                 max_files=self.opts.max_files, chunk_bytes=self.opts.chunk_bytes)

    def _round(self, fc) -> bool | None:
        """One round: True when the pull is finished, False to go on, None when it stalled."""
        req = self._request()
        raw = self.signer.sign(kind=Kind.CAPTURE_PULL, leaf=MESSAGES[Kind.CAPTURE_PULL].leaf,
                             to=Addressee(self.fleet, device=self.device), body=req.to_json(),
                             expires_s=self.opts.request_expiry_s)
        try:
            fc.publish(self.topics.of(Kind.CAPTURE_PULL), raw, retain=False)
        except BrokerUnavailableError:
            return None
        self.stats.rounds += 1
        offered: dict[str, ff.IndexEntry] | None = None
        remaining = 0
        new_acks: list[str] = []
        last = time.monotonic()
        for msg in fc.messages(timeout_s=self.opts.timeout_s, idle_s=self.opts.stall_s):
            doc = msg.json()
            if not isinstance(doc, dict) or doc.get("pull_id") != self.pull_id:
                continue
            last = time.monotonic()
            if self.on_data is not None:
                self.on_data(doc)
            kind = doc.get("type")
            if kind == proto.DataType.REFUSED.value:
                raise PullRefusedError(f"{self.fleet}/{self.device} refused the capture pull: {doc.get('detail')} "
                                       f"[{doc.get('reason_code')}]")
            if kind == proto.DataType.OFFER.value:
                sent_acks = set(req.ack)
                self.stats.acked += len(set(doc.get("deleted") or ()) & sent_acks)
                self._pending_ack = [i for i in self._pending_ack if i not in sent_acks]
                offered, remaining = self._offered(doc), int(doc.get("remaining") or 0)
                for cid in list(offered):
                    if cid in self._have:  # written before, its ack lost: ack it, do not write again
                        self.stats.already_had += 1
                        new_acks.append(cid)
                        offered.pop(cid)
                for cid in req.resume:
                    if cid in offered:
                        self.stats.resumed_files += 1
            elif offered is None:
                continue
            elif kind == proto.DataType.CHUNK.value:
                self._chunk(doc, offered, new_acks)
            elif kind == proto.DataType.UPLOADED.value:
                self._uploaded(doc, offered, new_acks)
            elif kind == proto.DataType.DONE.value:
                self.stats.failed.update(doc.get("failed") or {})
                self._skipped(doc, offered)
                break
        else:
            if offered is None or time.monotonic() - last >= self.opts.stall_s * 0.99:
                self._commit(new_acks)
                return None
        self._commit(new_acks)
        if offered is None:
            return None
        self.progress(f"{self.device}: {self.stats.files} files ({self.stats.bytes} bytes), {remaining} left")
        return not offered and remaining == 0 and not self._pending_ack and not new_acks

    def _commit(self, new_acks: list[str]) -> None:
        if new_acks:
            self.writer.commit()  # durable before the device may delete them
            self._pending_ack += [a for a in new_acks if a not in self._pending_ack]

    def _skipped(self, doc: dict, offered: dict[str, ff.IndexEntry]) -> None:
        """The offered files the device no longer holds (evicted since the offer): recorded, not
        failed, never asked for again (a partial one is dropped, not resumed); a file this side
        already holds stays counted as received."""
        skipped = doc.get("skipped")
        if not isinstance(skipped, dict):
            return
        for cid, why in skipped.items():
            if cid in self._have:
                continue
            offered.pop(cid, None)
            self._partial.pop(cid, None)
            self.stats.failed.pop(cid, None)
            self.stats.skipped[str(cid)] = str(why)

    def _offered(self, doc: dict) -> dict[str, ff.IndexEntry]:
        out = {}
        for f in doc.get("files") or []:
            try:
                meta = ff.CaptureMeta.from_json(f.get("meta"), where=f"offer of {self.device}")
                path = f"{self.device}/{meta.id}{ff.SUFFIX}"
                out[meta.id] = ff.IndexEntry(path=ff.check_path(path), sha256=str(f["sha256"]), bytes=int(f["bytes"]),
                                             meta=meta)
            except (ff.CaptureFormatError, KeyError, TypeError, ValueError) as e:
                self.stats.failed[str(f.get("id"))] = f"bad offer entry: {e}"
        return out

    def _chunk(self, doc: dict, offered: dict[str, ff.IndexEntry], new_acks: list[str]) -> None:
        cid = doc.get("id")
        e = offered.get(cid)
        if e is None:
            return
        asm = self._partial.get(cid)
        if asm is None or asm.sha256 != e.sha256:
            asm = self._partial[cid] = proto.FileAssembly(cid, sha256=e.sha256, size=e.bytes)
        try:
            asm.add(doc)
        except PayloadRejected as err:
            self.stats.failed[cid] = str(err)
            return
        if asm.contiguous() >= e.bytes:
            data = asm.complete()
            del self._partial[cid]
            self._accept(e, data, offered, new_acks)

    def _uploaded(self, doc: dict, offered: dict[str, ff.IndexEntry], new_acks: list[str]) -> None:
        cid = doc.get("id")
        e = offered.get(cid)
        if e is None or doc.get("error"):
            if e is not None:
                self.stats.failed[cid] = str(doc.get("error"))
            return
        url = proto.fill_url(self.opts.fetch_url or self.opts.upload_url or "", fleet=self.fleet,
                             device=self.device, capture_id=cid, pull_id=self.pull_id)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                data = resp.read(e.bytes + 1)  # the offered size bounds it; more is refused as partial
        except (urllib.error.URLError, OSError) as err:
            self.stats.failed[cid] = f"fetching {url}: {err}"
            return
        self._accept(e, data, offered, new_acks)

    def _accept(self, e: ff.IndexEntry, data: bytes | None, offered: dict, new_acks: list[str]) -> None:
        why = "incomplete" if data is None else ff.verify_entry(e, data)
        if why:  # asked again in the next round (not acked: the device keeps it)
            self.stats.bad_files += 1
            self.stats.failed[e.meta.id] = why
            return
        self.writer.add_bytes(e.path, data, e.meta)
        offered.pop(e.meta.id, None)
        self.stats.failed.pop(e.meta.id, None)
        self._have.add(e.meta.id)
        new_acks.append(e.meta.id)
        s = self.stats
        s.files, s.bytes, s.samples = s.files + 1, s.bytes + len(data), s.samples + e.meta.samples
        s.first_ts_ms = e.meta.ts_ms if s.first_ts_ms is None else min(s.first_ts_ms, e.meta.ts_ms)
        s.last_ts_ms = e.meta.ts_ms if s.last_ts_ms is None else max(s.last_ts_ms, e.meta.ts_ms)


def _close(fc) -> None:
    if fc is not None:
        try:
            fc.close()
        except Exception:  # a client whose broker went away: nothing left to close cleanly
            pass
