"""The agent's local control API: how a client finds a running agent, authenticates, and what
it sends and receives (HTTP + JSON, loopback by default).

- Discovery: ``<state_dir>/agent.json`` holds :class:`AgentInfo` ``{pid, host, port}`` while
  the agent runs (it holds ``agent.lock`` meanwhile; see :mod:`.statedir`).
- Authentication: every control request carries :data:`TOKEN_HEADER` with the contents of
  ``<state_dir>/control.token``.
- Routes: ``GET`` :data:`STATUS`; ``POST`` :data:`ROLLBACK`, :data:`RELOAD`, :data:`UPDATE`.
  Errors are ``{"error": "..."}`` with an HTTP status.
- ``POST`` :data:`UPDATE` takes an :class:`UpdateRequest` body and answers 200 with NDJSON
  lines: ``{"event": UpdateEvent}`` per state, an empty line every :data:`HEARTBEAT_S`
  seconds while a state lasts, and a last ``{"result": UpdateResult}`` or
  ``{"error": ..., "reason": ...}``; 409 while another update runs.

Pure: values in, values out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TOKEN_HEADER = "X-Edgeship-Token"
STATUS = "/edgeship/v1/status"
ROLLBACK = "/edgeship/v1/rollback"
RELOAD = "/edgeship/v1/reload"
UPDATE = "/edgeship/v1/update"
#: seconds between heartbeat lines of the update stream (a client may read with a short timeout)
HEARTBEAT_S = 5.0
#: the largest update request body accepted
MAX_UPDATE_BODY_BYTES = 4096


@dataclass(frozen=True)
class AgentInfo:
    """``agent.json``: where a running agent listens."""

    pid: int
    host: str
    port: int

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "port": self.port}

    @classmethod
    def from_json(cls, d: Any) -> "AgentInfo":
        """Raises KeyError/TypeError on a malformed document."""
        return cls(pid=int(d["pid"]), host=str(d["host"]), port=int(d["port"]))

    @property
    def url(self) -> str:
        """The base URL a local client uses (a wildcard listen address is reached on loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class UpdateRequest:
    """The body of ``POST`` :data:`UPDATE` (``repository_url`` overrides ``[update]
    repository_url`` for this update only: an offline mirror, say)."""

    model: str
    release: int | None = None
    deployment_id: str | None = None
    repository_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "release": self.release, "deployment_id": self.deployment_id,
                "repository_url": self.repository_url}

    @classmethod
    def parse(cls, body: bytes) -> "UpdateRequest":
        """The request in ``body``. Raises ValueError naming the bad field."""
        if len(body) > MAX_UPDATE_BODY_BYTES:
            raise ValueError(f"body of {len(body)} bytes is over {MAX_UPDATE_BODY_BYTES}")
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError) as e:
            raise ValueError(f"body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(data) - {"model", "release", "deployment_id", "repository_url"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("'model' (a model name) is required")
        release = data.get("release")
        if release is not None and (not isinstance(release, int) or isinstance(release, bool) or release < 1):
            raise ValueError(f"'release' must be a positive integer, not {release!r}")
        for key in ("deployment_id", "repository_url"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key!r} must be a string")
        return cls(model=model, release=release, deployment_id=data.get("deployment_id"),
                   repository_url=data.get("repository_url") or None)
