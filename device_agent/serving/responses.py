"""JSON answers of the HTTP API, and the mapping from the agent's errors to HTTP statuses.

Every error is ``{"error": "..."}``: 400 malformed or mismatched request, 404 unknown model
or route, 409 a store refusal, 413 body too large, 503 not ready (with ``Retry-After``
while the model is unloaded on purpose), 500 the model raised on valid input.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from runtime.errors import EdgeshipRuntimeError, InputMismatchError

from ..agent.errors import ModelNotFoundError, NotReadyError
from ..logs import get_logger
from ..store import StoreError
from .v2 import V2Error

log = get_logger("http")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # allow_nan: a model may legitimately output NaN/Inf; Python/JS clients read the tokens
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def map_error(request: Request, e: Exception) -> Response:
    """The HTTP answer for an exception raised while handling ``request``."""
    if isinstance(e, V2Error):
        status, msg = e.status, e.message
    elif isinstance(e, ModelNotFoundError):
        status, msg = 404, str(e)
    elif isinstance(e, NotReadyError):
        if e.retry_after_s is not None:  # unloaded on purpose for a moment (an update's memory policy)
            return error_response(503, str(e), {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))})
        status, msg = 503, str(e)
    elif isinstance(e, InputMismatchError):
        status, msg = 400, str(e)
    elif isinstance(e, StoreError):
        status, msg = 409, str(e)
    elif isinstance(e, EdgeshipRuntimeError):
        status, msg = 500, f"inference failed: {e}"
        log.error("http.inference_failed", path=request.url.path, error=str(e))
    else:
        status, msg = 500, f"internal error: {type(e).__name__}: {e}"
        log.error("http.unexpected", path=request.url.path, error=repr(e), exc_info=e)
    if status < 500:
        log.debug("http.rejected", status=status, path=request.url.path, error=msg)
    return error_response(status, msg)


async def http_exception(request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
