"""Structured JSON logs: one object per line, readable by ELK / Loki log shippers.

Every line has ``ts`` (UTC ISO 8601 with milliseconds), ``level``, ``event`` (a dotted
name such as ``model.switched``), ``model`` (the model name or sha, or null) and the
event's own fields. Third-party loggers (uvicorn) are routed through the same formatter
with ``event`` set to their logger name.

Use::

    log = logs.get_logger(__name__)
    log.info("model.switched", model=ref.name, sha256=ref.sha256, previous=old.sha256)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
ROOT = "edgeship"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = getattr(record, "fields", None)
        obj: dict[str, Any] = {"ts": ts, "level": record.levelname.lower()}
        if fields is not None:  # our events: msg is the event name
            obj["event"] = record.msg
            obj["model"] = fields.pop("model", None)
            obj.update(fields)
        else:
            obj["event"] = record.name
            obj["model"] = None
            obj["message"] = record.getMessage()
            extra = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k != "fields"}
            obj.update(extra)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, separators=(",", ":"))


class EventLogger:
    """A logger whose calls are ``log.<level>(event, **fields)``."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc_info: Any = None) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra={"fields": dict(fields)}, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, *, exc_info: Any = None, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields, exc_info)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's spelling)
        return self._log.isEnabledFor(level)


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def configure(*, level: str = "info", stream: TextIO | None = None, file: str | None = None) -> logging.Handler:
    """Send edgeship and uvicorn logs as JSON lines to ``file`` (appended) or ``stream``
    (stderr by default). Replaces handlers an earlier call installed. Returns the handler."""
    handler: logging.Handler
    handler = logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    lvl = getattr(logging, level.upper())
    for name in (ROOT, "uvicorn"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h.formatter, JsonFormatter):
                lg.removeHandler(h)
        lg.addHandler(handler)
        lg.setLevel(lvl)
        lg.propagate = False
    return handler
