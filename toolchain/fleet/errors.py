"""Errors of the operator side of the MQTT control plane (push, fleet status/watch)."""

from __future__ import annotations

from toolchain.errors import ToolchainError


class FleetError(ToolchainError):
    """Base class of fleet/push errors."""


class BrokerUnavailableError(FleetError):
    """The MQTT broker cannot be reached or refused the connection."""


class ReleaseNotFoundError(FleetError):
    """The model/release is not a signed target of the TUF repository; nothing was published."""


class RepositoryError(FleetError):
    """The TUF repository cannot be read or its metadata does not verify."""


class NoTargetsError(FleetError):
    """The device or group selection matched no device."""


class RolloutError(FleetError):
    """A rollout cannot run or be controlled (see the message)."""


class RolloutClaimedError(RolloutError):
    """Another controller runs this rollout (its local lock or its retained MQTT claim)."""


class RolloutNotFoundError(RolloutError):
    """No journal and no retained state of that rollout id."""
