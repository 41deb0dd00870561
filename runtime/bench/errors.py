"""Errors of the measuring core. All derive from :class:`runtime.errors.EdgeshipRuntimeError`."""

from __future__ import annotations

from ..errors import EdgeshipRuntimeError


class BenchError(EdgeshipRuntimeError):
    """Base class of benchmark errors."""


class CellSpecError(BenchError, ValueError):
    """A cell description that cannot be run (threads < 1, batch < 1, unknown key, bad preset)."""


class BatchShapeError(BenchError, ValueError):
    """The model's fixed input shape cannot take the requested batch size."""


class InputDataError(BenchError):
    """The validation inputs file is missing, corrupt or does not match the model's inputs."""


class ModelInputError(InputDataError):
    """The model's inputs cannot be made from what was given (a dynamic dim without a size or
    that breaks at the size given, an ``--input-shape`` that does not fit): bad input for every
    cell of the model, so ``edgeship bench`` stops (exit 2) instead of reporting failed cells."""


class DynamicDimError(ModelInputError):
    """The model fails at the sizes its dynamic dims were given (names the dims and sizes)."""


class UnsizedDimError(ModelInputError):
    """A dynamic dim other than the batch has no size to generate random data at (names it)."""


class InputShapeError(ModelInputError):
    """An example shape (``--input-shape``) names no input of the model, has another rank, or
    contradicts a fixed dim."""
