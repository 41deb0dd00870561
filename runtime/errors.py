"""One error hierarchy for the inference runtime, and the exit codes every error carries.

Every error a caller of :mod:`runtime` can see derives from :class:`EdgeshipRuntimeError`.
Foreign engine errors are re-raised as ours, ``from`` the original, with the file,
engine and tensor a user needs to act on them.

Every error class of edgeship (this tree, ``toolchain.errors.ToolchainError``'s and
``device_agent.errors.DeviceAgentError``'s) carries ``exit_code``, an :class:`ExitCode`:
the code a command of ``edgeship`` or ``edgeship-agent`` ends with when that error ends it
(``runtime.cliutil.run`` is the one handler that prints it and returns the code).
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ExitCode(enum.IntEnum):
    """What every ``edgeship`` and ``edgeship-agent`` command exits with."""

    OK = 0
    FAILED = 1      # tried and failed: network, verification, a busy or broken device state
    BAD_INPUT = 2   # a flag, file, config or document the user gave is wrong, or an extra is missing
    PARTIAL = 3     # some artifacts/cells/devices failed, the others succeeded


class EdgeshipRuntimeError(Exception):
    """Base class of every runtime error."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class EngineNotInstalledError(EdgeshipRuntimeError):
    """The Python package behind an engine is missing; the message names the extra."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, engine: str, extra: str, detail: str = "") -> None:
        self.engine = engine
        self.extra = extra
        msg = (
            f"engine {engine!r} is not installed: pip install 'edgeship[{extra}]'"
            + (f" ({detail})" if detail else "")
        )
        super().__init__(msg)


class UnknownEngineError(EdgeshipRuntimeError):
    """An engine name or model file type that no backend handles."""

    exit_code = ExitCode.BAD_INPUT


class ModelLoadError(EdgeshipRuntimeError):
    """The model file is missing, corrupt, or the engine refused to compile it."""


class InputMismatchError(EdgeshipRuntimeError, ValueError):
    """Feeds whose names, dtypes or shapes do not match the model's inputs."""

    exit_code = ExitCode.BAD_INPUT


class InferenceError(EdgeshipRuntimeError):
    """The engine raised while running a model on valid inputs."""
