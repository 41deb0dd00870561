"""The device's side of a capture pull (protocol: runtime.contracts.capture.pull).

Each admitted ``capture/pull`` message (signed, checked by the MQTT service's ControlGate)
is one round: delete what the operator acknowledged, offer the next files, send them over
MQTT in chunks or upload them with HTTP PUT, end with ``done``. One round runs at a time, in
its own thread (never on paho's network thread); a newer round stops the running one. The
MQTT chunks are published directly with a bounded window of unacknowledged messages: while
the broker is away the round stops instead of piling chunks in memory (the operator asks
again). A file whose bytes no longer match the store's index is not sent (reported failed);
one the writer evicted after the offer is reported skipped (``done.skipped``), a file that
cannot be read failed, and the round goes on.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.error
import urllib.request
from typing import Any, Callable

from runtime.contracts.capture import pull as proto
from runtime.contracts.errors import PayloadRejected

from ..logs import get_logger
from .store import CaptureStore

log = get_logger("capture")

#: MQTT chunks published and not yet acknowledged by the broker, at most
WINDOW = 8
PUBLISH_TIMEOUT_S = 10.0

Publish = Callable[[str, dict], Any]  # (pull_id, body) -> paho MQTTMessageInfo


class PullServer:
    def __init__(self, store: CaptureStore | None, *, publish: Publish, fleet: str, device: str,
                 http_timeout_s: float = 30.0) -> None:
        self.store, self._publish = store, publish
        self.fleet, self.device = fleet, device
        self.http_timeout_s = http_timeout_s
        self._lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def handle(self, body: dict) -> None:
        """An admitted pull round: start it (a running one stops first). Never raises."""
        try:
            req = proto.PullRequest.from_json(body)
        except PayloadRejected as e:
            self.refuse(str(body.get("pull_id") or "unknown"), e.reason_code, e.detail)
            return
        if self.store is None:
            self.refuse(req.pull_id, "capture.off", "capture is not enabled on this device ([capture] enabled)")
            return
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()
            previous, cancel = self._thread, threading.Event()
            self._cancel = cancel
            t = threading.Thread(target=self._run, args=(req, cancel, previous), name="edgeship-capture-pull",
                                 daemon=True)
            self._thread = t
        t.start()

    def refuse(self, pull_id: str, reason_code: str, detail: str) -> None:
        """Tell the operator a round was refused (a bad or unauthenticated request)."""
        try:
            self._publish(_level(pull_id), proto.refused(pull_id=pull_id, reason_code=reason_code, detail=detail))
        except Exception as e:  # the refusal is also on events (the service's reject)
            log.warning("capture.pull_refusal_unsent", error=str(e))

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        t = self._thread
        if t is not None:
            t.join(timeout_s)
        return t is None or not t.is_alive()

    # ------------------------------------------------------------ one round
    def _run(self, req: proto.PullRequest, cancel: threading.Event, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join(PUBLISH_TIMEOUT_S)
        try:
            self._round(req, cancel)
        except Exception as e:  # the operator times out and asks again; the store is unchanged
            log.error("capture.pull_failed", pull_id=req.pull_id, error=f"{type(e).__name__}: {e}")

    def _round(self, req: proto.PullRequest, cancel: threading.Event) -> None:
        store = self.store
        deleted = store.remove(req.ack)
        entries = store.entries(since_ms=req.since_ms)
        picked, total = [], 0
        for e in entries[:req.max_files]:
            if picked and total + e.bytes > req.max_bytes:
                break
            picked.append(e)
            total += e.bytes
        files = [{"id": e.meta.id, "path": e.path, "sha256": e.sha256, "bytes": e.bytes, "meta": e.meta.to_json()}
                 for e in picked]
        self.rounds += 1
        log.info("capture.pull_round", pull_id=req.pull_id, deleted=len(deleted), offered=len(files),
                 remaining=len(entries) - len(picked), transport=req.transport.value)
        self._wait(self._publish(_level(req.pull_id), proto.offer(
            pull_id=req.pull_id, files=files, remaining=len(entries) - len(picked), deleted=deleted,
            usage=store.usage())))
        sent, failed, skipped = 0, {}, {}
        for e in picked:
            if cancel.is_set():
                return
            try:
                data = store.read_stored(e)
            except OSError as err:
                failed[e.meta.id] = f"cannot read it on the device: {err}"
                continue
            if data is None:  # the writer evicted (or the sweep expired) it since the offer: not tampered
                skipped[e.meta.id] = "evicted meanwhile"
                continue
            if hashlib.sha256(data).hexdigest() != e.sha256:
                failed[e.meta.id] = "the file on the device differs from its index entry"
                continue
            if req.transport is proto.Transport.MQTT:
                if not self._send_chunks(req, e.meta.id, data, cancel):
                    return
            else:
                err = self._upload(req, e.meta.id, data)
                if err:
                    failed[e.meta.id] = err
                    continue
            sent += 1
        self._wait(self._publish(_level(req.pull_id), proto.done(pull_id=req.pull_id, sent=sent, failed=failed,
                                                                skipped=skipped)))

    def _send_chunks(self, req: proto.PullRequest, cid: str, data: bytes, cancel: threading.Event) -> bool:
        window: list[Any] = []
        for chunk in proto.chunks(pull_id=req.pull_id, capture_id=cid, data=data, offset=req.resume.get(cid, 0),
                                  chunk_bytes=req.chunk_bytes):
            if cancel.is_set():
                return False
            window.append(self._publish(_level(req.pull_id), chunk))
            if len(window) >= WINDOW:
                if not self._wait(window.pop(0)):
                    log.warning("capture.pull_stalled", pull_id=req.pull_id, capture=cid)
                    return False
        return all(self._wait(w) for w in window)

    def _upload(self, req: proto.PullRequest, cid: str, data: bytes) -> str | None:
        url = proto.fill_url(req.url or "", fleet=self.fleet, device=self.device, capture_id=cid, pull_id=req.pull_id)
        r = urllib.request.Request(url, data=data, method="PUT", headers={
            "Content-Type": "application/octet-stream", "X-Edgeship-Sha256": hashlib.sha256(data).hexdigest(),
            "X-Edgeship-Capture": cid})
        status, error = None, None
        try:
            with urllib.request.urlopen(r, timeout=self.http_timeout_s) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status, error = e.code, f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError) as e:
            error = f"upload failed: {e}"
        if error is None and not 200 <= (status or 0) < 300:
            error = f"HTTP {status}"
        self._wait(self._publish(_level(req.pull_id), proto.uploaded(pull_id=req.pull_id, capture_id=cid,
                                                                     status=status, error=error)))
        return error

    @staticmethod
    def _wait(info: Any) -> bool:
        """Wait for the broker's acknowledgement of one publish (False: not within the timeout)."""
        if info is None or not hasattr(info, "wait_for_publish"):
            return True
        try:
            info.wait_for_publish(timeout=PUBLISH_TIMEOUT_S)
            return info.is_published()
        except (RuntimeError, ValueError):
            return False


def _level(pull_id: str) -> str:
    """A pull id fit for the topic level (a refused request may carry anything)."""
    import re

    return pull_id if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", pull_id or "") else "invalid"
