"""Errors of the publishing side (part of the toolchain hierarchy)."""

from __future__ import annotations

from ..errors import ToolchainError


class OtaPublishError(ToolchainError):
    """Base class of key, publish and repository errors."""


class KeyStoreError(OtaPublishError):
    """A key directory is missing, incomplete, or would be overwritten."""


class RepositoryStateError(OtaPublishError):
    """A TUF repository directory is missing metadata, inconsistent, or locked."""


class BundleRejectedError(OtaPublishError):
    """A bundle cannot be published (unreadable, no model.json, release not newer)."""
