"""Shared setup of the MQTT benchmarks: a local mosquitto, a real agent serving a tiny ONNX
model from a fresh state dir, and the telemetry service connected to the broker."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, NamedTuple


def install_tiny(work: Path) -> Path:
    """A state dir ``work/state`` with release 1 of the demo's tiny model active."""
    from device_agent.store import Store
    from toolchain.demo_ota import make_tiny_bundle

    bundle = make_tiny_bundle(work / "bundles", release=1)
    store = Store(work / "state")
    store.activate(store.install_bundle(bundle.path).sha256)
    return work / "state"


def real_agent(work: Path):
    """A device_agent Agent serving release 1 of the demo's tiny model."""
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig

    return Agent(AgentConfig.for_state_dir(install_tiny(work)))


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


class BenchDevice(NamedTuple):
    work: Path
    broker: Any  # toolchain.fleet.localbroker.Broker
    agent: Any  # device_agent.agent.Agent
    rec: Any  # toolchain.fleet.localbroker.Recorder on the benchmark's topic filter
    svc: Any  # the started telemetry service (check ``svc.link.wait_connected``)


@contextlib.contextmanager
def bench_device(prefix: str, *, topic: str | None, client_id: str | None = None,
                 **mqtt: Any) -> Iterator[BenchDevice]:
    """A local broker, a real agent, a recorder on ``topic`` (none when None: the script has
    its own consumer) and the agent's telemetry (fleet ``bench``, device ``dev1``, metrics
    every 1 s, ``mqtt`` overriding MqttConfig fields) started against the broker; everything
    is stopped and the work dir removed on exit."""
    logging.basicConfig(level=logging.ERROR)  # the expected disconnect warnings would clutter the figures

    from device_agent.mqtt import MqttConfig, start
    from toolchain.fleet.localbroker import Broker, Recorder

    work = workdir(prefix)
    broker = Broker(str(work / "broker")).start()
    agent = rec = svc = None
    try:
        agent = real_agent(work)
        rec = Recorder(broker.port, topic, client_id=client_id) if topic is not None else None
        svc = start(MqttConfig(fleet="bench", device_id="dev1", port=broker.port, queue_dir=str(work / "q"),
                               **{"metrics_interval_s": 1.0, **mqtt}), agent, None)
        yield BenchDevice(work, broker, agent, rec, svc)
    finally:
        if svc is not None:
            svc.stop(timeout_s=2)
        if rec is not None:
            rec.close()
        if agent is not None:
            agent.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
