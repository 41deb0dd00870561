"""JSON answers of the HTTP API, and the mapping from the agent's errors to HTTP statuses.

Every error is ``{"error": "..."}``: 400 malformed or mismatched request, 404 unknown model
or route, 409 a store refusal, 413 body too large, 503 not ready (with ``Retry-After``
while the model is unloaded on purpose), 500 the model raised on valid input.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .errors import error_status


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # strict JSON: tensors spell NaN/Inf as strings (.tensors), nothing else holds them
    return Response(json.dumps(obj, separators=(",", ":"), allow_nan=False), status_code=status,
                    media_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def map_error(request: Request, e: Exception) -> Response:
    """The HTTP answer for an exception raised while handling ``request``."""
    status, msg, headers = error_status(e, where=request.url.path)
    return error_response(status, msg, headers)


async def http_exception(request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
