"""Check that a model release exists as a *verified* signed target of a TUF repository.

Uses ``tuf.ngclient`` (the same verification a device does): root from ``--root`` (the
root.json devices are provisioned with) or, when not given, the repository's own
``metadata/1.root.json`` (trust on first use: fine for a sanity check before pushing, since
devices verify everything again with their provisioned root). A repository directory is read
through a local-file fetcher; an http(s) URL through tuf's default fetcher. The custom
metadata of each target (``custom.edgeship``, written by ``edgeship publish``) names the
model and its release.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runtime.contracts.release import ReleaseFacts

from .errors import ReleaseNotFoundError, RepositoryError


@dataclass(frozen=True)
class Release:
    model: str
    release: int
    target_path: str
    sha256: str
    length: int
    version: str | None


def _local_fetcher(root_dir: Path):
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient import FetcherInterface

    class LocalFetcher(FetcherInterface):
        """Serves ``file-base/<path>`` URLs from a repository directory."""

        def _fetch(self, url: str) -> Iterator[bytes]:
            rel = url.split("local-repo/", 1)[-1]
            path = (root_dir / rel).resolve()
            if root_dir.resolve() not in path.parents or not path.is_file():
                raise DownloadHTTPError(f"{path}: not found", 404)
            with open(path, "rb") as f:
                yield f.read()

    return LocalFetcher()


def _bootstrap_root(repo: str, root_file: str | None) -> bytes:
    try:
        if root_file:
            return Path(root_file).read_bytes()
        if repo.startswith(("http://", "https://")):
            with urllib.request.urlopen(repo.rstrip("/") + "/metadata/1.root.json", timeout=10) as r:
                return r.read()
        return (Path(repo) / "metadata" / "1.root.json").read_bytes()
    except OSError as e:
        raise RepositoryError(f"cannot read the root metadata of {repo} ({root_file or 'metadata/1.root.json'}): {e}") from e


def list_releases(repo: str, *, root_file: str | None = None) -> list[Release]:
    """Every model release in the repository's verified targets metadata.

    Raises:
        RepositoryError: unreachable, not a TUF repository, or metadata that does not verify
            (bad signatures, expired, rolled back).
    """
    from tuf.api.exceptions import RepositoryError as TufRepositoryError, DownloadError
    from tuf.api.metadata import Metadata
    from tuf.ngclient import Updater

    is_url = repo.startswith(("http://", "https://"))
    if not is_url and not (Path(repo) / "metadata").is_dir():
        raise RepositoryError(f"{repo}: no metadata/ directory; pass the directory given to `edgeship publish --repo` or its URL")
    root = _bootstrap_root(repo, root_file)
    with tempfile.TemporaryDirectory(prefix="edgeship-push-") as tmp:
        base = repo.rstrip("/") + "/metadata/" if is_url else "http://local-repo/metadata/"
        fetcher = None if is_url else _local_fetcher(Path(repo))
        try:
            up = Updater(metadata_dir=tmp, metadata_base_url=base, fetcher=fetcher, bootstrap=root)
            up.refresh()
            targets = Metadata.from_file(os.path.join(tmp, "targets.json"))
        except (TufRepositoryError, DownloadError, OSError, ValueError) as e:
            raise RepositoryError(f"{repo}: TUF metadata does not verify or cannot be fetched: {type(e).__name__}: {e}") from e
    out = []
    for path, tf in targets.signed.targets.items():
        facts = ReleaseFacts.from_target(tf.unrecognized_fields)
        if facts is not None and "release" in facts.fields:
            out.append(Release(model=facts.name, release=facts.release, target_path=path,
                               sha256=tf.hashes.get("sha256", ""), length=tf.length, version=facts.version))
    return sorted(out, key=lambda r: (r.model, r.release))


def find_release(repo: str, *, model: str, release: int, root_file: str | None = None) -> Release:
    """The signed target of ``model`` ``release``.

    Raises:
        ReleaseNotFoundError: no such release (the message lists the published ones).
        RepositoryError: see :func:`list_releases`.
    """
    releases = list_releases(repo, root_file=root_file)
    for r in releases:
        if r.model == model and r.release == release:
            return r
    have = [r.release for r in releases if r.model == model]
    raise ReleaseNotFoundError(
        f"{model} release {release} is not a signed target of {repo} "
        + (f"(published releases of {model}: {have})" if have else f"(no release of {model} is published)")
        + "; run `edgeship publish` first. Nothing was pushed.")
