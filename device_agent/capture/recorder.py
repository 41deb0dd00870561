"""The capture shell on the request path: decide cheaply, copy what fired, write elsewhere.

On the request's thread :meth:`CaptureRecorder.on_result` / :meth:`on_failure` look up the
served model's rules (computed once per model: the config's, the bundle's, clamped to the
disk budget), draw the rate coins and run the pure :func:`.policy.fired`; only when a rule
fires are the call's tensors copied and put on a bounded queue (full: dropped and counted,
the request never waits). A rule-less model costs one dict lookup. With a ``drift`` rule,
the last ``recent_calls`` calls are also kept by reference (bounded by ``recent_bytes``) so
that a drift alarm (:meth:`on_drift_alarm`) can keep the calls that moved the score.

One writer thread turns queued drafts into captures: the redaction hook (a callable that may
change or drop the draft; a hook that raises drops it: privacy fails closed), the format
(runtime.contracts.capture.fileformat), the store's budgets and segment files. It wakes once
per ``write_interval_s`` (sooner when the queue is half full) and writes every draft queued
meanwhile, so a batch, not each capture, pays for waking a cold thread.
"""

from __future__ import annotations

import itertools
import math
import queue
import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from runtime.contracts.capture.fileformat import Capture, CaptureMeta
from runtime.contracts.capture.rules import RESULT_TRIGGERS, CaptureRule, Clamp, Trigger, class_output_problem
from runtime.spec import is_dynamic
from runtime.tensors import call_nbytes

from ..logs import get_logger
from . import policy
from .config import CaptureSection
from .store import CaptureStore

log = get_logger("capture")

#: how often the writer deletes expired captures
_SWEEP_S = 60.0
#: why a fired capture was not written (``counters["dropped.<reason>"]``; the store's refusals,
#: ``refused`` in :meth:`CaptureRecorder.stats`, are counted apart)
DROP_REASONS = ("queue_full", "redacted", "redact_failed", "write_failed", "index_failed")


@dataclass(frozen=True)
class InvalidRule:
    """A config rule that cannot fire on a served model (its class-score output is not there)."""

    rule: str
    model: str          # "name version"
    problem: str        # runtime.contracts.capture.rules.class_output_problem's sentence
    outputs: tuple[str, ...]

    def describe(self) -> str:
        return f"model {self.model}: {self.problem}; the rule never fires on it"


@dataclass
class Draft:
    """A capture about to be written: what the redaction hook gets and returns (changed or not)."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    rule: str
    trigger: str
    rules: tuple[str, ...]
    model: dict
    ts_ms: int
    layout: str
    score: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ModelRules:
    """The rules of one served model, split by what triggers them."""

    model: dict
    result: tuple[CaptureRule, ...]
    error: tuple[CaptureRule, ...]
    drift: tuple[CaptureRule, ...]
    layout: str
    clamps: tuple[Clamp, ...] = ()
    #: baseline (mean, std) per tensor name, for ranking drift candidates
    stats: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: the rate of the one result rule when there is exactly one and no drift rule (on_result's fast path)
    rate: float | None = None
    #: on the fast path: calls left until the next one the rule's coin selects (``[n]``, counted down
    #: by the request threads; racy across them, which only blurs the sampling a little)
    countdown: list = field(default_factory=lambda: [0])
    #: what a low_confidence/disagreement rule without an ``output`` reads: the bundle's class
    #: output (``BundleInfo.class_output``, its drift baseline's class mix); "": the first output
    class_output: str = ""


ModelLookup = Callable[[str], tuple[dict, Any]]  # sha -> (ModelRef json, BundleInfo)


class CaptureRecorder:
    def __init__(self, section: CaptureSection, store: CaptureStore, *, model_lookup: ModelLookup,
                 fleet: str, device: str, redact: Callable[[Draft], Draft | None] | None = None,
                 rng: Callable[[], float] = random.random, clock: Callable[[], float] = time.time) -> None:
        self.section, self.store = section, store
        self.fleet, self.device = fleet, device
        self._lookup, self._redact, self._rng, self._clock = model_lookup, redact, rng, clock
        self._models: dict[str, ModelRules] = {}
        self._limits: dict[str, CaptureRule] = {r.name: r for r in section.rules}
        self._queue: queue.Queue[Draft | None] = queue.Queue(maxsize=section.queue_max)
        self._recent: deque = deque()
        self._recent_bytes = 0
        self._recent_lock = threading.Lock()
        self.counters: Counter = Counter()
        self.clamps: dict[str, Clamp] = {}
        self._clamp_listeners: list[Callable[[Clamp], None]] = []
        self.invalid: dict[tuple[str, str], InvalidRule] = {}  # (rule, model sha) -> why it cannot fire
        self._invalid_listeners: list[Callable[[InvalidRule], None]] = []
        self._kick = threading.Event()  # the writer's batch is cut short (a half-full queue, wait_idle, stop)
        self._kick_at = max(1, section.queue_max // 2)
        self._thread = threading.Thread(target=self._write_loop, name="edgeship-capture", daemon=True)
        self._id_prefix, self._seq = secrets.token_hex(3), itertools.count()  # ids: <ts_ms>-<prefix><seq>

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "CaptureRecorder":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (within ``timeout_s``), then the index."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._kick.set()
            self._thread.join(timeout=timeout_s)
        self.store.close()

    def add_clamp_listener(self, fn: Callable[[Clamp], None]) -> None:
        """``fn(clamp)`` once per rule clamped to fit the disk budget (e.g. an MQTT event)."""
        self._clamp_listeners.append(fn)

    def add_invalid_listener(self, fn: Callable[[InvalidRule], None]) -> None:
        """``fn(invalid)`` once per (rule, model) where a config rule cannot fire (e.g. an MQTT event)."""
        self._invalid_listeners.append(fn)

    def wait_idle(self, timeout_s: float = 5.0, *, index: bool = True, kick: bool = True) -> bool:
        """Wait until every queued draft was written (tests, the pull), then write the index.
        ``kick``: start the writer's batch now; ``index=False`` / ``kick=False``: leave the index
        and the batch to the writer thread's own schedule, as in service (benchmarks)."""
        deadline = time.monotonic() + timeout_s
        if kick:
            self._kick.set()
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                if index:
                    self.store.flush_index(force=True)
                return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------ request path
    def rules_for(self, sha: str) -> ModelRules:
        m = self._models.get(sha)
        if m is None:
            m = self._models[sha] = self._compute_rules(sha)
        return m

    def on_result(self, sha: str, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                  expected: Any = None) -> None:
        """A successful call (request thread). ``expected``: the classes the caller expected, if any."""
        m = self._models.get(sha) or self.rules_for(sha)
        rate = m.rate
        if rate is not None:  # the common case, kept cheap: most calls only count down here
            left = m.countdown
            left[0] -= 1
            if left[0] > 0:
                return
            left[0] = self._gap(rate)
            rules, draws = m.result, [0.0]  # selected: a draw under any rate > 0
        else:
            if m.drift:
                self._remember(sha, feeds, outputs, expected)
            rules = m.result
            if not rules:
                return
            draws = [self._rng() for _ in rules]
        hits = policy.fired(rules, outputs, _labels(expected), draws, class_output=m.class_output)
        if not hits:
            return
        rule, score = policy.attribute(hits)
        self._offer(m, rule, tuple(r.name for r, _ in hits), feeds, outputs, expected, score=score)

    def _gap(self, rate: float) -> int:
        """Calls from one selected by a coin of ``rate`` to the next (geometric: the same
        selections as a coin tossed per call, at one draw per selection instead of per call)."""
        if rate >= 1.0:
            return 1
        return 1 + int(math.log(1.0 - self._rng()) / math.log1p(-rate))

    def on_failure(self, sha: str, feeds: Mapping[str, np.ndarray], error: BaseException) -> None:
        """The engine raised on a call (request thread)."""
        m = self._models.get(sha) or self.rules_for(sha)
        hits = [r for r in m.error if self._rng() < r.rate]
        if hits:
            rule = max(hits, key=lambda r: r.priority)
            self._offer(m, rule, tuple(r.name for r in hits), feeds, {}, None,
                        error=f"{type(error).__name__}: {error}"[:500])

    def on_drift_alarm(self, sha: str, tensor: str) -> int:
        """A drift alarm on ``tensor`` was raised: queue the recent calls of ``sha`` that sit
        farthest from the baseline on it. Returns how many were queued."""
        m = self.rules_for(sha)
        if not m.drift:
            return 0
        with self._recent_lock:
            calls = [c for c in self._recent if c[0] == sha]
        base = m.stats.get(tensor)
        queued = 0
        for rule in m.drift:
            if self._rng() >= rule.rate:
                continue
            ranked = sorted(calls, key=lambda c: -_distance(c, tensor, base))[:rule.drift_samples]
            for _sha, feeds, outputs, expected, _n in ranked:
                score = _distance((_sha, feeds, outputs, expected, _n), tensor, base)
                queued += self._offer(m, rule, (rule.name,), feeds, outputs, expected,
                                      score=score if math.isfinite(score) else None)
        return queued

    def _offer(self, m: ModelRules, rule: CaptureRule, names: tuple[str, ...], feeds: Mapping[str, np.ndarray],
               outputs: Mapping[str, np.ndarray], expected: Any, *, score: float | None = None,
               error: str | None = None) -> bool:
        self.counters[f"fired.{rule.name}"] += 1
        if self._queue.full():
            self.counters["dropped.queue_full"] += 1
            return False
        draft = Draft(inputs={k: np.array(v, copy=True) for k, v in feeds.items()},
                      outputs={k: np.array(v, copy=True) for k, v in outputs.items()},
                      labels=_labels(expected), rule=rule.name, trigger=rule.trigger.value, rules=names,
                      model=m.model, ts_ms=int(self._clock() * 1000), layout=m.layout, score=score, error=error)
        try:
            self._queue.put_nowait(draft)
        except queue.Full:
            self.counters["dropped.queue_full"] += 1
            return False
        if self._queue.qsize() >= self._kick_at:
            self._kick.set()
        return True

    def _remember(self, sha: str, feeds: Mapping, outputs: Mapping, expected: Any) -> None:
        n = call_nbytes(feeds, outputs)
        s = self.section
        with self._recent_lock:
            self._recent.append((sha, feeds, outputs, expected, n))
            self._recent_bytes += n
            while self._recent and (len(self._recent) > s.recent_calls or self._recent_bytes > s.recent_bytes):
                self._recent_bytes -= self._recent.popleft()[4]

    # ------------------------------------------------------------ rules of a model
    def _compute_rules(self, sha: str) -> ModelRules:
        ref, info = self._lookup(sha)
        s = self.section
        bundle = tuple(getattr(getattr(info, "capture", None), "rules", ()) or ())
        rules, clamps = policy.effective_rules(s.rules, bundle, use_bundle_rules=s.use_bundle_rules,
                                               disk_budget_bytes=s.disk_budget_bytes)
        for c in clamps:
            if c.rule not in self.clamps:
                self.clamps[c.rule] = c
                log.warning("capture.rule_clamped", rule=c.rule, asked_bytes=c.asked_bytes,
                            granted_bytes=c.granted_bytes, detail=c.describe())
                for fn in list(self._clamp_listeners):
                    fn(c)
        self._limits.update({r.name: r for r in rules})
        class_output = getattr(info, "class_output", "")  # None info: no bundle, no class output
        bad = self._invalid_rules(sha, ref, info, rules, class_output)
        live = tuple(r for r in rules if r.max_bytes > 0 and r.rate > 0 and r.name not in bad)
        inputs = tuple(info.inputs) if info is not None else ()
        layout = "batch" if inputs and all(len(t.shape) >= 1 and is_dynamic(t.shape[0]) for t in inputs) else "whole"
        stats = {}
        if info is not None:
            stats = {k: (v.mean, v.std) for k, v in {**info.input_stats, **info.output_stats}.items()}
        result = tuple(r for r in live if r.trigger in RESULT_TRIGGERS)
        drift = tuple(r for r in live if r.trigger is Trigger.DRIFT)
        fast = result[0].rate if len(result) == 1 and not drift else None
        return ModelRules(model={k: ref.get(k) for k in ("name", "version", "release", "sha256")}, result=result,
                          error=tuple(r for r in live if r.trigger is Trigger.ERROR), drift=drift,
                          layout=layout, clamps=tuple(clamps), stats=stats,
                          rate=fast, countdown=[self._gap(fast) if fast is not None else 0],
                          class_output=class_output)

    def _invalid_rules(self, sha: str, ref: dict, info: Any, rules: tuple[CaptureRule, ...],
                       class_output: str) -> set[str]:
        """The rules that cannot judge this model's outputs (the package-time check, applied to
        the config's rules here: the bundle's passed it when the bundle was loaded), each logged,
        counted and reported once."""
        outputs = tuple(info.outputs) if info is not None else ()
        if not outputs:
            return set()
        bad = set()
        for r in rules:
            problem = class_output_problem(r, outputs, class_output)
            if problem is None:
                continue
            bad.add(r.name)
            if (r.name, sha) in self.invalid:
                continue
            inv = self.invalid[(r.name, sha)] = InvalidRule(
                r.name, f"{ref.get('name')} {ref.get('version')}", problem, tuple(o.name for o in outputs))
            log.warning("capture.rule_invalid", rule=r.name, model=ref.get("name"), version=ref.get("version"),
                        outputs=list(inv.outputs), detail=inv.describe())
            for fn in list(self._invalid_listeners):
                fn(inv)
        return bad

    # ------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_S
        while True:
            try:
                batch = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                batch = []  # nothing came: still flush the index and sweep when due
            if batch and batch[0] is not None and self.section.write_interval_s > 0:
                # the captures of the next write_interval_s join this one: the writer wakes once
                # per batch, not per capture (a half-full queue, wait_idle and stop cut it short)
                self._kick.wait(self.section.write_interval_s)
            self._kick.clear()
            while batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            for draft in batch:
                try:
                    if draft is None:
                        stop = True
                    elif not stop:
                        self._write(draft)
                finally:
                    self._queue.task_done()
            if stop:
                return
            try:  # a full disk must not end the writer: the store stays dirty and the next turn retries
                if self._queue.empty():
                    self.store.flush_index()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + _SWEEP_S
                    self.store.sweep(rules=self._limits, default_retention_s=CaptureRule().retention_s)
            except OSError as e:
                self.counters["dropped.index_failed"] += 1
                log.error("capture.index_failed", error=f"{type(e).__name__}: {e}")

    def _write(self, draft: Draft) -> None:
        if self._redact is not None:
            try:
                out = self._redact(draft)
            except Exception as e:  # fail closed: an unredacted capture is never written
                self.counters["dropped.redact_failed"] += 1
                log.error("capture.redact_failed", rule=draft.rule, error=f"{type(e).__name__}: {e}")
                return
            if out is None:
                self.counters["dropped.redacted"] += 1
                return
            draft = out
        try:
            cap = self._capture(draft)
            why = self.store.put(cap, rules=self._limits)
        except Exception as e:  # a bad draft (from the hook) or a disk error: counted, serving goes on
            self.counters["dropped.write_failed"] += 1
            log.error("capture.write_failed", rule=draft.rule, error=f"{type(e).__name__}: {e}")
            return
        if why:
            self.counters[f"dropped.{why}"] += 1
        else:
            self.counters["stored"] += 1

    def _capture(self, d: Draft) -> Capture:
        inputs, outputs, labels = d.inputs, d.outputs, d.labels
        if d.layout == "whole":  # one whole request per sample
            inputs = {k: np.asarray(v)[None] for k, v in inputs.items()}
        samples = len(next(iter(inputs.values()))) if inputs else 1
        if labels is not None and labels.size != samples:
            labels = None  # an expectation that does not name one class per sample is not a label
        meta = CaptureMeta(id=f"{d.ts_ms}-{self._id_prefix}{next(self._seq):x}", ts_ms=d.ts_ms, fleet=self.fleet,
                           device=self.device, model=d.model, rule=d.rule, trigger=d.trigger, rules=d.rules,
                           samples=samples, inputs=tuple(inputs), outputs=tuple(outputs),
                           labels=labels is not None, layout=d.layout, score=d.score, error=d.error)
        return Capture(meta=meta, inputs=inputs, outputs=outputs, labels=labels)

    # ------------------------------------------------------------ reporting
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict:
        return {"counters": dict(self.counters), "queued": self._queue.qsize(),
                "store": {**self.store.usage(), "refused": dict(self.store.counters.refused),
                          "evicted": dict(self.store.counters.evicted), "expired": self.store.counters.expired,
                          "removed_after_pull": self.store.counters.removed_after_pull},
                "clamped": [c.describe() for c in self.clamps.values()],
                "invalid": [i.describe() for i in self.invalid.values()]}


def _labels(expected: Any) -> np.ndarray | None:
    if expected is None:
        return None
    a = np.asarray(expected)
    if not np.issubdtype(a.dtype, np.integer):
        return None
    return a.astype(np.int64).reshape(-1)


def _distance(call: tuple, tensor: str, base: tuple[float, float] | None) -> float:
    _sha, feeds, outputs, _exp, _n = call
    x = feeds.get(tensor)
    if x is None:
        x = outputs.get(tensor)
    if x is None or base is None:
        return 0.0
    return policy.drift_contribution(x, mean=base[0], std=base[1])

