"""Errors of the publishing side (part of the toolchain hierarchy). All are exit code 2:
they are about the key directory, repository or bundle the user named."""

from __future__ import annotations

from ..errors import BadInputError


class OtaPublishError(BadInputError):
    """Base class of key, publish and repository errors."""


class KeyStoreError(OtaPublishError):
    """A key directory is missing, incomplete, or would be overwritten."""


class RepositoryStateError(OtaPublishError):
    """A TUF repository directory is missing metadata, inconsistent, or locked."""


class PublishRefusedError(OtaPublishError):
    """A bundle cannot be published (unreadable, no model.json, release not newer)."""


class RepoServeError(OtaPublishError):
    """`repo serve` refused: the folder is not a repository, or the port cannot be bound."""
