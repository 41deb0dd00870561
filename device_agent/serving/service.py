"""The protocol's operations on one agent, shared by the HTTP and gRPC front ends.

Both front ends parse their wire format into :class:`~.v2.InferRequest` and call
:meth:`InferenceService.loaded` (the model being served, if the path names it) and
:meth:`InferenceService.run`; metadata, readiness, configuration, statistics and the
repository index come from :mod:`.catalog` and :mod:`.stats` through the methods here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..agent.core import Agent, LoadedModel
from ..store import ModelRef
from . import catalog
from .errors import V2Error
from .stats import model_stats


class InferenceService:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    # ------------------------------------------------------------------ models
    def versions(self) -> list[catalog.Version]:
        """Every model in the store; the one loaded with its session's specs, ready."""
        cur = self.agent.current()
        out = []
        for ref in self.agent.store.models():
            if cur is not None and ref.sha256 == cur.ref.sha256:
                out.append(catalog.Version(cur.ref, tuple(cur.session.inputs), tuple(cur.session.outputs), True))
                continue
            try:
                info = self.agent.store.info(ref.sha256)
            except Exception:  # a model that vanished (GC) between the listing and here
                continue
            out.append(catalog.Version(ref, tuple(info.inputs), tuple(info.outputs), False))
        if cur is not None and not any(v.ready for v in out):  # served but already GC'd from disk
            out.append(catalog.Version(cur.ref, tuple(cur.session.inputs), tuple(cur.session.outputs), True))
        return out

    def version(self, name: str, version: str | None) -> catalog.Version:
        """Raises V2Error(404) for a model or version not in the store."""
        return catalog.pick(self.versions(), name, version)

    def metadata(self, name: str, version: str | None) -> dict[str, Any]:
        vs = self.versions()
        return catalog.metadata(catalog.pick(vs, name, version), vs)

    def ready(self, name: str, version: str | None) -> bool:
        """Raises V2Error(404) for a model or version not in the store."""
        return self.version(name, version).ready

    def config(self, name: str, version: str | None) -> dict[str, Any]:
        return catalog.model_config(self.version(name, version))

    def statistics(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        if name is None:
            refs = [v.ref for v in self.versions()]
        else:
            refs = [self.version(name, version).ref]
        return model_stats(self.agent.metrics.totals(), refs)

    def index(self, *, ready_only: bool = False) -> list[dict[str, Any]]:
        return catalog.repository_index(self.versions(), ready_only=ready_only,
                                        load_error=self.agent.status().get("load_error"))

    # --------------------------------------------------------------- inference
    def loaded(self, name: str, version: str | None) -> LoadedModel:
        """The model being served, when it is the one named.

        Raises:
            NotReadyError: no model is loaded (503).
            V2Error(404): another model or version is named; 503 when it is in the store but
                not loaded.
        """
        cur = self.agent.current()
        if cur is None:
            raise self.agent.not_ready_error()
        if name == cur.ref.name and catalog.matches(cur.ref, version):
            return cur
        stored = [v for v in self.versions() if v.ref.name == name and catalog.matches(v.ref, version)]
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        if stored:
            raise V2Error(503, f"{what} is in the store but not loaded; serving {cur.ref.name!r} version "
                               f"{cur.ref.version} (switch with `edgeship-agent rollback` or an update)")
        raise V2Error(404, f"{what} is not served here; serving {cur.ref.name!r} version {cur.ref.version}")

    def run(self, feeds: dict[str, np.ndarray], name: str, *,
            expected: Any = None) -> tuple[dict[str, np.ndarray], ModelRef]:
        """Run the served model (the one that really ran is returned: a switch may land in between).
        ``expected``: the request's expected classes (``edgeship_expected``), for capture rules."""
        return self.agent.infer_traced(feeds, name, expected=expected)
