"""Connection hardening for the HTTP server: read timeouts and a connection cap.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but has no timeout for
a connection that never finishes its request headers, and its ``limit_concurrency`` answers
503 to *every* request once half-open connections fill the count, so a slowloris client
(many connections, a header byte now and then) ties up the server's file descriptors and
turns well-behaved clients away. This module adds, on top of uvicorn's httptools protocol:

- **header timeout**: a request's headers must arrive within ``header_timeout_s`` of its
  first byte (of the connection, for a new one); trickling bytes does not extend it.
- **body timeout**: a pause longer than ``body_timeout_s`` between two pieces of a body
  closes the connection.
- **cap**: at most ``max_connections`` open connections. At the cap a new connection takes
  the place of the oldest one that has no request in progress (never sent a complete
  request head first, then idle keep-alive ones); when every connection is busy with a
  request, the new one is answered ``503`` with ``Retry-After: 1`` as soon as it sends its
  request, and closed. Health, inference and control requests therefore keep being served
  while half-open connections fill the cap.

Phases of a connection: ``new`` (connected, nothing sent) -> ``head`` (reading the request
head) -> ``body`` (reading the body) -> ``busy`` (the app runs and answers) -> ``idle``
(keep-alive, uvicorn's timer) -> ``head`` ... Only ``new``, ``head`` and ``idle`` may be
evicted. All of it runs on the event loop: no locks.
"""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass

from ..logs import get_logger

log = get_logger("http")

#: file descriptors kept free below the open-file limit (model files, the store, MQTT, gRPC, logs)
FD_RESERVE = 256
#: connections answered 503 that may wait for their request at once; more are dropped
MAX_REFUSED = 64
_EVICT_ORDER = {"new": 0, "head": 0, "idle": 1}


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 0  # 0: the open-file limit less FD_RESERVE

    def cap(self) -> int:
        if self.max_connections:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(16, soft - FD_RESERVE)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (what the unit's LimitNOFILE grants);
    returns ``(before, after)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:  # a container may refuse; serve with the limit there is
            log.warning("http.nofile_not_raised", soft=soft, hard=hard, error=str(e))
            return soft, soft
    return soft, max(soft, want)


class Guard:
    """The open connections, their cap, and who gives way at the cap."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cap = limits.cap()
        self.open: set = set()
        self.refused = 0
        self.evicted = 0

    def admit(self, conn) -> bool:
        """True when ``conn`` may be served (possibly after closing an idle one)."""
        if len(self.open) >= self.cap:
            victims = [c for c in self.open if c.phase in _EVICT_ORDER]
            if not victims:
                return False
            victim = min(victims, key=lambda c: (_EVICT_ORDER[c.phase], c.since))
            self.evicted += 1
            victim.drop("evicted at the connection cap")
        self.open.add(conn)
        return True

    def closed(self, conn) -> None:
        self.open.discard(conn)


def _busy_answer(cap: int) -> bytes:
    body = json.dumps({"error": f"the server is at its connection cap ({cap}) and every connection is "
                                f"busy; retry shortly"}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def protocol_class(guard: Guard):
    """uvicorn's httptools protocol with the timeouts and the cap of ``guard``.

    Raises:
        ImportError: httptools is not installed (it is in the agent extra).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    limits = guard.limits

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.phase, self.since, self._timer, self._refused = "new", self.loop.time(), None, False

        # -- asyncio.Protocol
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if guard.admit(self):
                self._arm(limits.header_timeout_s, "no request head within header_timeout_s")
            elif guard.refused >= MAX_REFUSED:
                transport.abort()
            else:
                self._refused = True
                guard.refused += 1
                self._arm(limits.header_timeout_s, "refused at the cap")

        def data_received(self, data: bytes) -> None:
            if self._refused:
                if not self.transport.is_closing():
                    self.transport.write(_busy_answer(guard.cap))
                    self.transport.close()
                return
            if self.phase in ("new", "idle"):
                if self.phase == "idle":  # a keep-alive connection starts its next request now
                    self._arm(limits.header_timeout_s, "no request head within header_timeout_s")
                self._enter("head")
            super().data_received(data)
            if self.phase == "body":
                self._arm(limits.body_timeout_s, "request body stalled past body_timeout_s")

        def connection_lost(self, exc) -> None:
            self._cancel()
            if self._refused:
                guard.refused -= 1
            else:
                guard.closed(self)
            super().connection_lost(exc)

        # -- parser and cycle callbacks
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._enter("body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._cancel()
            self._enter("busy")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._enter("idle")  # uvicorn's keep-alive timer takes over

        # -- helpers
        def _enter(self, phase: str) -> None:
            self.phase, self.since = phase, self.loop.time()

        def _arm(self, delay_s: float, why: str) -> None:
            self._cancel()
            self._timer = self.loop.call_later(delay_s, self.drop, why)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def drop(self, why: str) -> None:
            """Close this connection now (a timeout fired, or the cap needs its place)."""
            self._cancel()
            guard.closed(self)
            log.debug("http.connection_closed", reason=why, phase=self.phase, client=str(self.client))
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol
