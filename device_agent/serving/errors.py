"""The serving layer's error: a request the protocol refuses, with the status to answer."""

from __future__ import annotations

import math

from runtime.errors import EdgeshipRuntimeError, InputMismatchError

from ..agent.errors import ModelNotFoundError, NotReadyError
from ..errors import DeviceAgentError
from ..logs import get_logger
from ..store import StoreError

log = get_logger("http")


class V2Error(DeviceAgentError):
    """A request the protocol layer refuses, with the HTTP status to answer (gRPC maps it
    to its status code: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED,
    503 UNAVAILABLE)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_status(e: Exception, *, where: str) -> tuple[int, str, dict[str, str] | None]:
    """``(HTTP status, message, extra headers)`` for an exception raised while serving ``where``
    (a path or an RPC); logs server-side failures. HTTP and gRPC answer from this one table."""
    headers = None
    if isinstance(e, V2Error):
        status, msg = e.status, e.message
    elif isinstance(e, ModelNotFoundError):
        status, msg = 404, str(e)
    elif isinstance(e, NotReadyError):
        status, msg = 503, str(e)
        if e.retry_after_s is not None:  # unloaded on purpose for a moment (an update's memory policy)
            headers = {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))}
    elif isinstance(e, InputMismatchError):
        status, msg = 400, str(e)
    elif isinstance(e, StoreError):
        status, msg = 409, str(e)
    elif isinstance(e, EdgeshipRuntimeError):
        status, msg = 500, f"inference failed: {e}"
        log.error("http.inference_failed", path=where, error=str(e))
    else:
        status, msg = 500, f"internal error: {type(e).__name__}: {e}"
        log.error("http.unexpected", path=where, error=repr(e), exc_info=e)
    if status < 500:
        log.debug("http.rejected", status=status, path=where, error=msg)
    return status, msg, headers
