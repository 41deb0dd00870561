"""POST /edgeship/v1/update: run a signed model update inside the serving process.

``edgeship-agent update --model NAME`` calls this route when an agent is running, so the
gate, the switch and the trial window happen where the real traffic is (the trial judges
the server's requests, not a separate process's canaries) and only one process writes
the store.

Request body (JSON): ``{"model": "NAME", "release": N | null, "deployment_id": "..." | null,
"repository_url": "..." | null}`` (``repository_url`` overrides ``[update] repository_url``
for this update only: an offline mirror, say).

Answers:

- 200 with an NDJSON stream (``application/x-ndjson``): one ``{"event": {...}}`` line per
  state the update enters (an :class:`~device_agent.ota.UpdateEvent`), an empty line
  every :data:`HEARTBEAT_S` seconds while a state lasts (so a client can use a short read
  timeout), and a last line ``{"result": {...}}`` (an
  :class:`~device_agent.ota.UpdateResult`) or ``{"error": "...", "reason": "..."}``.
- 409 ``{"error": ...}``: another update is running in this agent (the control route,
  polling, MQTT or the start-up recovery: they share one :class:`Updater`).
- 400: a malformed body. 500: the update could not start (e.g. an unreadable journal).

The update keeps running when the client goes away; ``edgeship-agent status`` and the
journal show how it ended.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runtime.contracts.control import HEARTBEAT_S, UpdateRequest

from ..logs import get_logger
from .responses import error_response

log = get_logger("http.update")


class UpdateHost:
    """The one :class:`~device_agent.ota.Updater` of a running agent, created on first use
    when ``_start_extensions`` did not create one (no ``[update]`` section and no journal)."""

    def __init__(self, config, agent) -> None:
        self.config, self.agent = config, agent
        self._lock = threading.Lock()
        self._updater = None

    def set(self, updater) -> None:
        with self._lock:
            self._updater = updater

    def cancel(self, timeout_s: float = 10.0) -> None:
        """Shutting down: abort a running update (before the switch; after it, roll back) and
        wait up to ``timeout_s`` for it to end, so the agent is not closed under it."""
        up = self.request_cancel()
        if up is not None:
            if not up.wait_idle(timeout_s):
                log.warning("update.still_running_at_shutdown", waited_s=timeout_s)

    def request_cancel(self):
        """Ask a running update to stop (does not wait); returns the updater, if any."""
        with self._lock:
            up = self._updater
        if up is not None:
            up.cancel()
        return up

    def updater(self):
        with self._lock:
            if self._updater is None:
                from ..ota.updater import Updater

                self._updater = Updater(self.config, self.agent.store, self.agent)
            return self._updater


def _run(updater, req: UpdateRequest, q: "queue.Queue[tuple[str, Any]]") -> None:
    """Thread body: run the update, put ("event"|"result"|"busy"|"error", payload) items on ``q``."""
    from ..ota.errors import UpdateBusyError, UpdateError

    try:
        res = updater.update(req.model, release=req.release, deployment_id=req.deployment_id,
                             repository_url=req.repository_url,
                             on_event=lambda ev: q.put(("event", ev.to_json())))
        q.put(("result", res.to_json()))
    except UpdateBusyError as e:
        q.put(("busy", str(e)))
    except UpdateError as e:
        q.put(("error", {"error": str(e), "reason": e.reason.value}))
    except Exception as e:  # the route answers with it; the server goes on
        log.error("update.route_failed", model=req.model, error=f"{type(e).__name__}: {e}")
        q.put(("error", {"error": f"{type(e).__name__}: {e}", "reason": "internal"}))


def _lines(first: tuple[str, Any], q: "queue.Queue[tuple[str, Any]]"):
    """NDJSON lines from the queue until the result or error (a sync iterator: Starlette runs
    it in its thread pool)."""
    item: tuple[str, Any] | None = first
    while True:
        if item is None:
            try:
                item = q.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                yield "\n"
                continue
        kind, payload = item
        item = None
        if kind == "event":
            yield json.dumps({"event": payload}) + "\n"
        elif kind == "result":
            yield json.dumps({"result": payload}) + "\n"
            return
        else:  # error (busy cannot come after the first event)
            yield json.dumps(payload if isinstance(payload, dict) else {"error": str(payload)}) + "\n"
            return


def update_endpoint(host: UpdateHost):
    async def handler(request: Request) -> Response:
        try:
            req = UpdateRequest.parse(await request.body())
        except ValueError as e:
            return error_response(400, f"POST /edgeship/v1/update: {e}")
        q: queue.Queue = queue.Queue()
        updater = host.updater()
        threading.Thread(target=_run, args=(updater, req, q), name="edgeship-update-http", daemon=True).start()
        first = await run_in_threadpool(q.get)  # the first state is persisted at once, or it is refused
        if first[0] == "busy":
            return error_response(409, f"an update is already running in this agent: {first[1]}")
        if first[0] == "error":
            return error_response(500, f"the update did not start: {first[1]['error']}")
        return StreamingResponse(_lines(first, q), media_type="application/x-ndjson")
    return handler
