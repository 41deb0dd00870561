"""The text exposition of ``GET /metrics``: prometheus_client's ``generate_latest``, with the
formatting of each family's names, labels and help done once instead of at every scrape.

A scrape's families are built from live state every time (:mod:`.collector`), but their shape —
name, help, type, the sample names and label sets — changes only when a label set appears or
goes (a new model, a new drift tensor). :class:`Exposition` asks ``generate_latest`` for a family
it has not seen in that shape, keeps the text before each sample's value, and from then on
writes only the values (``floatToGoString``, as ``generate_latest`` does; a family whose values
all equal those of the last scrape reuses that scrape's text of it). A template is kept
only after it reproduced ``generate_latest``'s bytes exactly; a family it cannot reproduce
(timestamps, OpenMetrics-only samples, a value formatted differently) is written by
``generate_latest`` at every scrape. The output is byte-for-byte what ``generate_latest`` gives.
"""

from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import generate_latest
from prometheus_client.utils import floatToGoString

#: family shapes kept (label sets are bounded; this bounds a misbehaving source too)
MAX_TEMPLATES = 1024


class _One:
    """A collector of one family (what ``generate_latest`` renders on a template miss)."""

    __slots__ = ("metric",)

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def collect(self) -> Iterable[Any]:
        return (self.metric,)


class Exposition:
    """Renders a registry (anything with ``collect()``) to text format 0.0.4 (bytes). One caller
    at a time (the route's, on the event loop): the kept texts are not guarded by a lock."""

    def __init__(self) -> None:
        # family shape -> [template, values last written, their text]; a template is (text
        # before the first sample, text before each sample's value), None: generate_latest's
        self._families: dict[tuple, list] = {}
        self.misses = 0

    def render(self, registry: Any) -> bytes:
        out: list[str] = []
        for metric in registry.collect():
            samples = metric.samples
            key = (metric.name, metric.type, metric.documentation,
                   tuple([(s.name, tuple(s.labels.items()), s.timestamp is None) for s in samples]))
            entry = self._families.get(key)
            if entry is None:
                entry = self._learn(key, metric)
            template = entry[0]
            if template is None:
                out.append(generate_latest(_One(metric)).decode("utf-8"))
                continue
            values = tuple([x.value for x in samples])
            if entry[1] != values:  # else the same values as the last scrape: the same text
                entry[1], entry[2] = values, _write(template, samples)
            out.append(entry[2])
        return "".join(out).encode("utf-8")

    def _learn(self, key: tuple, metric: Any) -> list:
        self.misses += 1
        text = generate_latest(_One(metric)).decode("utf-8")
        lines = text.splitlines(keepends=True)
        n = len(metric.samples)
        head, body = lines[:len(lines) - n], lines[len(lines) - n:]
        template = None
        if len(body) == n and all(h.startswith("#") for h in head) and not any(b.startswith("#") for b in body):
            candidate = ("".join(head), tuple(line.rpartition(" ")[0] + " " for line in body))
            if _write(candidate, metric.samples) == text:
                template = candidate
        if len(self._families) >= MAX_TEMPLATES:
            self._families.clear()
        entry = self._families[key] = [template, None, ""]
        return entry


def _write(template: tuple[str, tuple[str, ...]], samples: list) -> str:
    head, prefixes = template
    return head + "".join([f"{p}{floatToGoString(s.value)}\n" for p, s in zip(prefixes, samples)])
