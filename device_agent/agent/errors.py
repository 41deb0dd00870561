"""The agent's errors: serving, switching, the agent process and its control API."""

from __future__ import annotations

from ..errors import DeviceAgentError


class AgentError(DeviceAgentError):
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


class ControlAPIError(AgentError):
    """The running agent's local control API could not be used (the message names the agent)."""


class ControlUnreachableError(ControlAPIError):
    """No answer from the running agent (it stopped, or the network path is gone)."""


class ControlRefusedError(ControlAPIError):
    """The running agent answered with an HTTP error; ``status`` is its code."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
