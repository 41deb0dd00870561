"""The agent's errors: serving, switching, and the agent process."""

from __future__ import annotations


class AgentError(Exception):
    """Base class of the agent's own errors."""


class ModelNotFoundError(AgentError, LookupError):
    """A request named a model the agent is not serving."""


class NotReadyError(AgentError):
    """No model is loaded (none installed, the active one failed to load, or it is unloaded
    for a moment to make room for an update: then ``retry_after_s`` says when to retry)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelSwitchError(AgentError):
    """A model switch failed (the new model does not load); the model that was serving still is."""


class AlreadyRunningError(AgentError):
    """Another agent process (or a local ``edgeship-agent update``) holds the state dir."""
