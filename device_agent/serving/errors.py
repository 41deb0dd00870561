"""The serving layer's error: a request the protocol refuses, with the status to answer."""

from __future__ import annotations

from ..errors import DeviceAgentError


class V2Error(DeviceAgentError):
    """A request the protocol layer refuses, with the HTTP status to answer (gRPC maps it
    to its status code: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED,
    503 UNAVAILABLE)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
