"""The agent: serves the store's active model in process (:mod:`.core`), with its request
window (:mod:`.metrics`), optional batching (:mod:`.batching`), errors (:mod:`.errors`), the
agent process on its state dir (:mod:`.process`) and the client of its control API
(:mod:`.client`).

``from device_agent.agent import Agent`` is the public entry point.
"""

from __future__ import annotations

from .core import Agent, LoadedModel, RequestObserver
from .errors import AgentError, AlreadyRunningError, ModelNotFoundError, ModelSwitchError, NotReadyError

__all__ = ["Agent", "LoadedModel", "RequestObserver", "AgentError", "AlreadyRunningError",
           "ModelNotFoundError", "ModelSwitchError", "NotReadyError"]
