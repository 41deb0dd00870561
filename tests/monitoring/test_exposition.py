"""The cheap scrape of GET /metrics: the templated exposition writes exactly what
prometheus_client's generate_latest writes, the process families are ProcessCollector's, and
the SoC temperature sampled every second follows the thermal zone."""

from __future__ import annotations

import itertools
import json
import math
import time

import pytest
from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, StateSetMetricFamily,
)

from device_agent.agent import Agent
from device_agent.config import AgentConfig
from device_agent.agent.metrics import LATENCY_BUCKETS_S
from device_agent.monitoring.collector import make_registry
from device_agent.monitoring.exposition import Exposition
from device_agent.monitoring.process import ProcessFamilies
from device_agent.store import Store
from runtime.contracts.statedir import StateDir


LE = [repr(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]


class _Fixed:
    """A registry whose families are given (so two renderers see the same values)."""

    def __init__(self, families) -> None:
        self.families = list(families)

    def collect(self):
        return self.families


def _families(step: int, models: list[str]):
    req = CounterMetricFamily("x_requests", "Requests.", labels=["model", "outcome"])
    hist = HistogramMetricFamily("x_seconds", "Latency \\ with a backslash\nand a newline.", labels=["model"])
    for m in models:
        req.add_metric([m, "ok"], step * 7)
        req.add_metric([m, "error"], float(step) / 3)
        hist.add_metric([m], [("0.001", step), ("0.1", step * 2), ("+Inf", step * 3)], step * 1e-5)
    yield req
    yield hist
    g = GaugeMetricFamily("x_value", "Odd values.", labels=["k"])
    for k, v in (("inf", math.inf), ("ninf", -math.inf), ("nan", math.nan), ("tiny", 1e-300 * step),
                 ("big", 2.0 ** 60 + step), ("int", step)):
        g.add_metric([k], v)
    yield g
    info = InfoMetricFamily("x_build", "Info.")
    info.add_metric([], {"name": 'quo"te', "version": "ünï\\côde", "sha": f"{step:064x}"[:12]})
    yield info
    st = StateSetMetricFamily("x_state", "States.")
    st.add_metric([], {"a": step % 2 == 0, "b": step % 2 == 1})
    yield st
    yield GaugeMetricFamily("x_empty", "No samples.", labels=["k"])
    ts = GaugeMetricFamily("x_stamped", "With a timestamp (written by generate_latest each time).")
    ts.add_metric([], step, timestamp=1700000000.5 + step)
    yield ts
    created = CounterMetricFamily("x_created_total", "With _created (reordered by generate_latest).",
                                  created=1700000000.0 + step)
    created.add_metric([], step, created=1700000000.0 + step)
    yield created


def test_templated_exposition_writes_the_bytes_of_generate_latest_across_scrapes_and_new_label_sets():
    e = Exposition()
    for step, models in enumerate([["a"], ["a"], ["a", "b"], ["b"], ["a", "b"]], start=1):
        reg = _Fixed(_families(step, models))
        assert e.render(reg) == generate_latest(reg), f"step {step}"
    learned = e.misses
    reg = _Fixed(_families(9, ["a", "b"]))
    assert e.render(reg) == generate_latest(reg) and e.misses == learned   # a known shape: values only
    templates = [entry[0] for entry in e._families.values()]
    assert any(t is None for t in templates)                                # stamped/_created: not templated
    assert sum(t is not None for t in templates) >= 6


@pytest.fixture
def agent(tmp_path, tiny_bundle):
    store = Store(tmp_path / "state")
    store.activate(store.install_bundle(tiny_bundle).sha256)
    a = Agent(AgentConfig.for_state_dir(tmp_path / "state"))
    yield a
    a.close()


def test_a_real_agents_scrape_is_generate_latest_and_its_process_families_are_process_collectors(agent):
    import numpy as np

    registry, collector = make_registry(agent)
    try:
        e = Exposition()
        for n in range(3):
            agent.infer({"x": np.full((1, 4), float(n), np.float32)})
            frozen = _Fixed(registry.collect())
            assert e.render(frozen) == generate_latest(frozen)
        (t,) = agent.metrics.totals().values()                 # the histogram is add_metric's
        ref = HistogramMetricFamily("edgeship_inference_duration_seconds", "x", labels=["model", "version"])
        acc = list(itertools.accumulate(t.buckets))
        ref.add_metric(["tiny", "1.1.0"], list(zip(LE, acc)), t.latency_sum_s)
        (hist,) = [m for m in registry.collect() if m.name == "edgeship_inference_duration_seconds"]
        assert hist.samples == ref.samples and acc[-1] == 3
        ours = {m.name: m for m in ProcessFamilies().collect()}
        theirs = {m.name: m for m in ProcessCollector(registry=None).collect()}
        assert ours.keys() == theirs.keys()
        for name, m in theirs.items():
            got = ours[name]
            assert (got.type, got.documentation) == (m.type, m.documentation), name
            a, b = got.samples[0].value, m.samples[0].value
            tolerance = {"process_cpu_seconds": 0.5, "process_open_fds": 5, "process_start_time_seconds": 1.0}
            assert abs(a - b) <= tolerance.get(name, 0.1 * b), (name, a, b)
    finally:
        collector.close()


def test_the_soc_temperature_is_sampled_every_second_off_the_scrape(agent, tmp_path, monkeypatch):
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("48500\n")
    monkeypatch.setenv("EDGESHIP_THERMAL_ROOT", str(tmp_path / "thermal"))
    registry, collector = make_registry(agent)
    try:
        def temp() -> float | None:
            for line in generate_latest(registry).decode().splitlines():
                if line.startswith("edgeship_soc_temperature_celsius "):
                    return float(line.split()[1])
            return None

        assert temp() == 48.5                                  # read before the first scrape
        assert "(read every 1 s)" in generate_latest(registry).decode()
        (zone / "temp").write_text("51250\n")
        written = time.monotonic()
        while temp() != 51.25 and time.monotonic() - written < 5:
            time.sleep(0.05)
        assert temp() == 51.25 and time.monotonic() - written < 2.5   # within about one interval
        StateDir(agent.config.state_dir).journal.write_text(json.dumps({"state": "verify", "history": []}))
        written = time.monotonic()                              # the update journal: sampled too
        verify = 'edgeship_update_state{edgeship_update_state="verify"} 1.0'
        while verify not in generate_latest(registry).decode() and time.monotonic() - written < 5:
            time.sleep(0.05)
        assert verify in generate_latest(registry).decode() and time.monotonic() - written < 2.5
    finally:
        collector.close()
    assert not collector.sampler._thread.is_alive()
