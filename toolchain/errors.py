"""One error hierarchy for the toolchain; each error says what to do about it.

Every error carries ``exit_code`` (``runtime.errors.ExitCode``): what an ``edgeship``
command ends with when the error ends it (``runtime.cliutil.run`` prints it). Errors about
what the user gave (a flag, a source, data, a missing extra) are 2; a failed step is 1.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import ClassVar

from runtime.errors import ExitCode


class ToolchainError(Exception):
    """Base class of every toolchain error."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class BadInputError(ToolchainError):
    """A flag, file or value the user gave cannot be used as given (exit code 2)."""

    exit_code = ExitCode.BAD_INPUT


class MissingExtraError(BadInputError):
    """A Python package the step needs is missing; names the pip extra."""

    def __init__(self, package: str, extra: str = "toolchain") -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{package} is not installed: pip install 'edgeship[{extra}]'")


class SourceError(BadInputError):
    """The model source (factory file, .pt2, .onnx) cannot be loaded."""


class ExportError(ToolchainError):
    """torch.onnx.export failed; the message names the module/op and the exporter stage."""


class DataError(BadInputError):
    """Calibration/validation data does not match the model (names, shapes, dtypes)."""


class ConversionError(ToolchainError):
    """One target cannot take the model (unsupported op, converter failure)."""


class VerificationError(ToolchainError):
    """An artifact breached a user-set gate (tolerance or accuracy drop)."""


class ManifestError(BadInputError):
    """A build directory's manifest.json is missing, unreadable or of an unknown schema version."""


def describe(e: BaseException) -> str:
    """``Type: first line of the message``; for an assertion (often bare inside third-party
    converters), also the file, line and code that failed, so no empty ``AssertionError:``
    reaches the user."""
    msg = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        f = tb[-1]
        where = f" (at {Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}: {(f.line or '').strip()})"
    if not msg:
        return f"{type(e).__name__} with no message{where}"
    return f"{type(e).__name__}: {msg[:400]}" + (where if isinstance(e, AssertionError) else "")
