"""Shared setup of the MQTT benchmarks: a local mosquitto, a real agent serving a tiny ONNX
model from a fresh state dir, and the telemetry service connected to the broker."""

from __future__ import annotations

import tempfile
from pathlib import Path


def real_agent(work: Path):
    """A device_agent Agent serving release 1 of the demo's tiny model."""
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.store import Store
    from toolchain.demo_ota import make_tiny_bundle

    bundle = make_tiny_bundle(work / "bundles", release=1)
    store = Store(work / "state")
    store.activate(store.install_bundle(bundle.path).sha256)
    return Agent(AgentConfig.for_state_dir(work / "state"))


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
