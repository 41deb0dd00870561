"""The ``edgeship_capture_*`` families of ``/metrics``: what device capture kept, dropped and holds.

A collector of its own, registered next to the agent's in :func:`.startup.start_monitoring`.
It reads the agent's capture recorder (``Agent.capture``, set when ``[capture] enabled``; no
family at all while it is None) at scrape time: the recorder's and the store's counters and
running totals, no directory scan. Labels are bounded: ``rule`` names come from agent.toml and
the served bundles, ``reason`` from the fixed sets below (each always present, 0 until it
happens).

- ``edgeship_capture_fired_total{rule}`` — calls a rule selected (its trigger matched, its rate coin won)
- ``edgeship_capture_stored_total{rule}`` — captures written to the store
- ``edgeship_capture_dropped_total{reason}`` — fired but not written: queue_full, redacted (the hook
  returned None), redact_failed, write_failed, index_failed (an index write failed; counted per failure)
- ``edgeship_capture_refused_total{reason}`` — refused by the store's budgets: too_large, disk_budget,
  disk_low, unknown_rule
- ``edgeship_capture_evicted_total{rule}``, ``edgeship_capture_expired_total``,
  ``edgeship_capture_removed_after_pull_total`` — captures that left the store, and why
- ``edgeship_capture_held{rule}``, ``edgeship_capture_held_bytes{rule}`` — captures on disk now
- ``edgeship_capture_disk_bytes`` (the store's files on disk, what the budget bounds),
  ``edgeship_capture_disk_budget_bytes``, ``edgeship_capture_queue_depth``
- ``edgeship_capture_rules_clamped``, ``edgeship_capture_rules_invalid`` — rules clamped to the disk
  budget, and (rule, model) pairs where a rule cannot fire (``capture.rule_invalid``)
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..capture.policy import REFUSE_REASONS
from ..capture.recorder import DROP_REASONS


class CaptureCollector(Collector):
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        rec = getattr(self.agent, "capture", None)
        if rec is None:
            return
        counters, store = dict(rec.counters), rec.store  # dict(): one C-level copy, safe against the writer
        sc = store.counters
        usage = store.usage()
        fired = _by_label("edgeship_capture_fired", "Calls a capture rule selected (trigger matched, rate coin won).",
                          "rule")
        dropped = _by_label("edgeship_capture_dropped", "Captures fired but not written, by reason.", "reason")
        for key, n in sorted(counters.items()):
            kind, _, label = key.partition(".")
            if kind == "fired":
                fired.add_metric([label], n)
        for reason in DROP_REASONS:
            dropped.add_metric([reason], counters.get(f"dropped.{reason}", 0))
        yield fired
        yield _counted(_by_label("edgeship_capture_stored", "Captures written to the store, by rule.", "rule"),
                       dict(sc.stored))
        yield dropped
        refused = dict.fromkeys(REFUSE_REASONS, 0) | dict(sc.refused)
        yield _counted(_by_label("edgeship_capture_refused", "Captures the store's budgets refused, by reason.",
                                 "reason"), refused)
        yield _counted(_by_label("edgeship_capture_evicted", "Captures evicted for a rule's or the disk budget, "
                                 "by rule.", "rule"), dict(sc.evicted))
        yield _one(CounterMetricFamily, "edgeship_capture_expired", "Captures deleted past their retention_s.",
                   sc.expired)
        yield _one(CounterMetricFamily, "edgeship_capture_removed_after_pull", "Captures deleted after a pull "
                   "(capture_pull with remove).", sc.removed_after_pull)
        yield _gauges("edgeship_capture_held", "Captures on disk now, by rule.", usage["captures_by_rule"])
        yield _gauges("edgeship_capture_held_bytes", "Bytes of the captures on disk now, by rule.",
                      usage["bytes_by_rule"])
        yield _one(GaugeMetricFamily, "edgeship_capture_disk_bytes", "Bytes the capture store's files take on disk "
                   "now (segments with erased records, standalone files, the index): what the disk budget bounds.",
                   usage["disk_bytes"])
        yield _one(GaugeMetricFamily, "edgeship_capture_disk_budget_bytes", "Bytes all captures may take together "
                   "([capture] disk_budget_bytes).", usage["disk_budget_bytes"])
        yield _one(GaugeMetricFamily, "edgeship_capture_queue_depth", "Fired captures waiting for the writer thread.",
                   rec.queue_depth())
        yield _one(GaugeMetricFamily, "edgeship_capture_rules_clamped", "Capture rules whose max_bytes was clamped "
                   "to the disk budget.", len(rec.clamps))
        yield _one(GaugeMetricFamily, "edgeship_capture_rules_invalid", "(rule, model) pairs where a capture rule "
                   "cannot fire: its class-score output is not an output of the served model.", len(rec.invalid))


def _by_label(name: str, doc: str, label: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=[label])


def _counted(family: Any, values: dict) -> Any:
    for label, n in sorted(values.items()):
        family.add_metric([label], n)
    return family


def _gauges(name: str, doc: str, values: dict) -> GaugeMetricFamily:
    return _counted(GaugeMetricFamily(name, doc, labels=["rule"]), values)


def _one(cls: type, name: str, doc: str, value: float) -> Any:
    f = cls(name, doc)
    f.add_metric([], value)
    return f
