"""The one client of a running agent's local control API (runtime.contracts.control).

``edgeship-agent status``, ``rollback`` and ``update`` use it when an agent runs on the
state dir (found with :func:`~.process.running_agent`). stdlib only (urllib).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

from runtime.contracts import control

from .errors import ControlAPIError, ControlRefusedError, ControlUnreachableError
from .process import RunningAgent

#: read timeout of the streamed update answer (the agent sends a heartbeat every HEARTBEAT_S)
STREAM_READ_TIMEOUT_S = 30.0


class ControlClient:
    """Calls one running agent. Every method raises :class:`ControlAPIError` (naming the agent):
    ControlRefusedError for an HTTP error answer, ControlUnreachableError when it does not answer."""

    def __init__(self, running: RunningAgent) -> None:
        self.running = running
        self.where = f"running agent pid {running.pid} ({running.url})"

    def status(self, *, timeout_s: float = 5.0) -> dict[str, Any]:
        return self._call("GET", control.STATUS, timeout_s=timeout_s)

    def rollback(self, *, timeout_s: float = 60.0) -> dict[str, Any]:
        return self._call("POST", control.ROLLBACK, timeout_s=timeout_s)

    def reload(self, *, timeout_s: float = 60.0) -> dict[str, Any]:
        return self._call("POST", control.RELOAD, timeout_s=timeout_s)

    def update(self, req: control.UpdateRequest) -> Iterator[dict[str, Any]]:
        """Run an update in the agent; yield its NDJSON messages (``{"event": ...}`` lines,
        then ``{"result": ...}`` or ``{"error": ..., "reason": ...}``), heartbeats skipped.

        Raises:
            ControlRefusedError: e.g. 409, another update runs there.
            ControlUnreachableError: the connection broke (the update may still be running).
        """
        r = self._open("POST", control.UPDATE, json.dumps(req.to_json()).encode(), STREAM_READ_TIMEOUT_S,
                       content_type="application/json")
        try:
            with r:
                for raw in r:
                    if raw.strip():
                        yield json.loads(raw)
        except OSError as e:
            raise ControlUnreachableError(
                f"{self.where}: {getattr(e, 'reason', e)} (the update may still be running there: see "
                f"`edgeship-agent status` and <state_dir>/update/journal.json)") from e

    # ------------------------------------------------------------------ HTTP
    def _call(self, method: str, path: str, *, timeout_s: float) -> dict[str, Any]:
        with self._open(method, path, b"" if method == "POST" else None, timeout_s) as r:
            return json.loads(r.read())

    def _open(self, method: str, path: str, data: bytes | None, timeout_s: float, *,
              content_type: str | None = None):
        token = self.running.token
        if token is None:
            raise ControlAPIError(f"{self.where}: its control.token is not readable by this user (run as the "
                                  f"agent's user or root), or its control endpoint is disabled")
        headers = {control.TOKEN_HEADER: token, **({"Content-Type": content_type} if content_type else {})}
        req = urllib.request.Request(self.running.url + path, method=method, data=data, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=timeout_s)
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", "")
            except ValueError:
                msg = ""
            raise ControlRefusedError(f"{self.where} answered {e.code}: {msg}", status=e.code) from e
        except (urllib.error.URLError, OSError) as e:
            raise ControlUnreachableError(f"cannot reach the {self.where}: {getattr(e, 'reason', e)}") from e
