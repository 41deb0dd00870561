"""Fixtures for the monitoring tests: real agent processes, a real mosquitto, a real Prometheus."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from monhelpers import AgentProcess, Prometheus, need_prometheus  # noqa: E402


@pytest.fixture
def agent_process(tmp_path):
    started: list[AgentProcess] = []

    def make(bundle: Path, name: str = "agent", **kw) -> AgentProcess:
        a = AgentProcess(tmp_path / name, bundle, **kw).start()
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()


@pytest.fixture
def prometheus(tmp_path):
    need_prometheus()
    started: list[Prometheus] = []

    def make(targets: dict[str, str]) -> Prometheus:
        p = Prometheus(tmp_path / f"prom{len(started)}", targets).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    from toolchain.demo_ota import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("mon-bundles"), release=1).path
