"""The errors of the contracts: one tree under :class:`ContractError`, itself a runtime error.

A contract error says which document, key or member broke the format; both sides raise or
catch these (the toolchain when it writes, the device when it reads).
"""

from __future__ import annotations

from ..errors import EdgeshipRuntimeError, ExitCode


class ContractError(EdgeshipRuntimeError, ValueError):
    """A document crossing the host/device boundary does not follow its format."""

    exit_code = ExitCode.BAD_INPUT


class BundleError(ContractError):
    """A bundle or its model.json is malformed; the message names the key or member."""


class PayloadRejected(ContractError):
    """An inbound MQTT document (desired state, command) was refused.

    ``reason_code`` is a stable machine-readable code (``payload.too_large``,
    ``payload.not_json``, ``payload.schema``, ...) reported in the ``events`` topic.
    """

    def __init__(self, reason_code: str, detail: str) -> None:
        self.reason_code = reason_code
        self.detail = detail
        super().__init__(f"{reason_code}: {detail}")
