"""Errors of ``edgeship bench`` (part of the toolchain hierarchy)."""

from __future__ import annotations

from ..errors import ToolchainError


class BenchInputError(ToolchainError):
    """The thing to benchmark cannot be read (no build dir/model file, bad manifest, bad option)."""


class ResultFormatError(ToolchainError):
    """A bench result JSON that is not a result of a schema version this tool reads."""
