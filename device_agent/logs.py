"""Structured JSON logs in Elastic Common Schema (ECS) field names: one object per line.

Filebeat, Fluent Bit, Logstash, Loki/Promtail read them without parsing rules. Every line:

- ``@timestamp`` (UTC ISO 8601, milliseconds), ``log.level`` (debug/info/warning/error),
  ``message`` (human text: the event and its fields, or a foreign logger's message),
  ``ecs.version``;
- ``event.action`` (our dotted event name such as ``model.switched``, or a foreign logger's
  name), ``event.outcome`` (``success``/``failure``/``unknown``), ``event.dataset``;
- ``service.name`` (``edgeship-agent``), ``service.version``, ``log.logger``, ``process.pid``;
- ``edgeship.*``: the event's own fields (``edgeship.model``, ``edgeship.sha256``, ...), in one
  namespace so they never clash with ECS fields;
- an exception as ``error.type``, ``error.message``, ``error.stack_trace`` (inside the object).

``event.outcome``: a field ``outcome=`` given by the caller wins; else ``failure`` at error
level or when the action ends in ``failed``/``refused``/``rejected``/``timeout``, ``success``
for our other events, ``unknown`` for foreign loggers. Third-party loggers (uvicorn) and the
lines native engines write to fd 2 (``runtime.nativelog``) go through the same formatter.

Use::

    log = logs.get_logger(__name__)
    log.info("model.switched", model=ref.name, sha256=ref.sha256, previous=old.sha256)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from . import __version__

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
ROOT = "edgeship"
SERVICE = "edgeship-agent"
ECS_VERSION = "8.11.0"
_FAILED = ("failed", "refused", "rejected", "timeout")
#: the loggers configure() routes: ours, uvicorn's
ROUTED = (ROOT, "uvicorn")


def _outcome(action: str, level: int, ours: bool, given: Any) -> str:
    if given in ("success", "failure", "unknown"):
        return given
    if level >= logging.ERROR or action.endswith(_FAILED):
        return "failure"
    return "success" if ours else "unknown"


def _text(action: str, fields: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in fields.items() if v is not None and not isinstance(v, (dict, list))]
    text = " ".join([action, *parts])
    return text if len(text) <= 500 else text[:497] + "..."


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = getattr(record, "fields", None)
        ours = fields is not None
        if ours:  # our events: msg is the event name, the fields are its data
            action, own = str(record.msg), dict(fields)
            message = _text(action, own)
        else:
            action = record.name
            message = record.getMessage()
            own = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k != "fields"}
        outcome = _outcome(action, record.levelno, ours, own.pop("outcome", None))
        obj: dict[str, Any] = {
            "@timestamp": ts, "log.level": record.levelname.lower(), "message": message,
            "ecs.version": ECS_VERSION,
            "event": {"action": action, "outcome": outcome, "dataset": "edgeship.agent"},
            "service": {"name": SERVICE, "version": __version__},
            "log": {"logger": record.name}, "process": {"pid": os.getpid()},
        }
        if own:
            obj["edgeship"] = own
        if record.exc_info:
            exc = record.exc_info[1]
            obj["error"] = {"type": type(exc).__name__ if exc else None, "message": str(exc) if exc else None,
                            "stack_trace": self.formatException(record.exc_info)}
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
    """Send edgeship and uvicorn logs as ECS JSON lines to ``file`` (appended) or ``stream``
    (stderr by default). Replaces handlers an earlier call installed. Python warnings go
    through it too (``logging.captureWarnings``), so nothing else reaches stderr. Returns the handler."""
    handler: logging.Handler
    handler = logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    lvl = getattr(logging, level.upper())
    logging.captureWarnings(True)
    for name in (*ROUTED, "py.warnings"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h.formatter, JsonFormatter):
                lg.removeHandler(h)
        lg.addHandler(handler)
        lg.setLevel(lvl)
        lg.propagate = False
    _route_uncaught()
    return handler


def _route_uncaught() -> None:
    """A thread that dies of an exception is logged (``thread.crashed``, traceback inside the
    object) instead of Python printing the traceback on stderr."""
    import threading

    log = logging.getLogger(f"{ROOT}.agent")

    def hook(args) -> None:
        if args.exc_type is SystemExit:
            return
        log.error("thread.crashed", extra={"fields": {"thread": getattr(args.thread, "name", None)}},
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = hook
