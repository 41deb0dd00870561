"""One error hierarchy for the inference runtime.

Every error a caller of :mod:`runtime` can see derives from :class:`EdgeshipRuntimeError`.
Foreign engine errors are re-raised as ours, ``from`` the original, with the file,
engine and tensor a user needs to act on them.
"""

from __future__ import annotations


class EdgeshipRuntimeError(Exception):
    """Base class of every runtime error."""


class EngineNotInstalledError(EdgeshipRuntimeError):
    """The Python package behind an engine is missing; the message names the extra."""

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


class ModelLoadError(EdgeshipRuntimeError):
    """The model file is missing, corrupt, or the engine refused to compile it."""


class InputMismatchError(EdgeshipRuntimeError, ValueError):
    """Feeds whose names, dtypes or shapes do not match the model's inputs."""


class InferenceError(EdgeshipRuntimeError):
    """The engine raised while running a model on valid inputs."""
