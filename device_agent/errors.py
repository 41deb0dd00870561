"""The root of the device agent's one error tree.

Every error the agent raises derives from :class:`DeviceAgentError`; the subtrees live
beside the code that raises them, each named for what went wrong:

- ``agent.errors``: AgentError > ModelNotFoundError, NotReadyError, ModelSwitchError,
  AlreadyRunningError, ControlAPIError (> ControlRefusedError, ControlUnreachableError)
- ``store``: StoreError > BundleRejectedError > BundleHashMismatchError; ModelNotInStoreError,
  NoPreviousModelError, StoreCorruptError
- ``configfile``: ConfigError (> ``mqtt.errors`` TelemetryConfigError)
- ``install``: InstallError > InstallWriteError
- ``serving.errors``: V2Error (an HTTP or gRPC answer, never a CLI exit)
- ``mqtt.errors``: TelemetryError > TelemetryConfigError, QueueError
- ``ota.errors``: UpdateError > SecurityError > ..., GateError > ..., FetchError, ...
- ``profiling``: ProfileRefused (answered to ``cmd/profile``, never a CLI exit)
- here: BadArgumentsError > StateDirNotFoundError

``exit_code`` (``runtime.errors.ExitCode``) is what an ``edgeship-agent`` command ends with
when the error ends it: 1 unless the class says 2 (bad input).
"""

from __future__ import annotations

from typing import ClassVar

from runtime.errors import ExitCode


class DeviceAgentError(Exception):
    """Base class of every device agent error."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class BadArgumentsError(DeviceAgentError):
    """A command was given options it cannot work with (e.g. --check without --model)."""

    exit_code = ExitCode.BAD_INPUT


class StateDirNotFoundError(BadArgumentsError):
    """The state dir (from the config or --state-dir) does not exist."""
