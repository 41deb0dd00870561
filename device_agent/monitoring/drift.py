"""The device shell of drift detection: live tensors in, scores and sustained alarms out.

The pure parts are in :mod:`runtime.drift` (bins, sketches, PSI, the alarm rule); this module
does the I/O: a tensor observer on the agent (:meth:`Agent.add_tensor_observer`) which the
agent hands one request in ``sample_every_requests`` (:meth:`Agent.set_tensor_sampling`: the
others only count down there) and which appends a reference to the call to a bounded list (a
few hundred nanoseconds), and one thread that every ``check_every_requests`` requests (or
every ``check_interval_s`` when traffic is slow) counts them into the sketch of the model being
served, scores the window of the last ``window_checks`` checks against the bundle's baseline,
and runs the alarm rule. Listeners (the MQTT publisher, tests) get every check and every alarm
transition; ``/metrics`` reads :meth:`DriftMonitor.latest`.

With ``max_cost_share`` (the cost budget) the monitor times its own work (the checks on the
checker thread's CPU clock, the sketched requests on the request thread, the count-down once)
against the model's inference time, and after each check plans a sparser schedule when the
one in force costs more than the budget (:func:`runtime.drift.schedule.plan`): never denser
than configured, reset to it for a new model; the report and ``/metrics`` give the schedule.

Invariants: memory is bounded by the baseline (sketch) and by ``max_pending_requests`` and
``max_pending_bytes`` (calls beyond either, when the thread lags, are counted as skipped, not
kept); a model switch, seen at the next check even with no traffic, starts a fresh sketch,
clears the alarms of the old model (CLEARED to the listeners) and its latest report; a model
without a baseline (a version-1 bundle, or one packaged from too little data) is not sketched.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from runtime.contracts.bundle.baseline import DriftThresholds
from runtime.drift.alarm import AlarmState, Transition, step
from runtime.drift.schedule import Schedule
from runtime.drift.sketch import DriftSketch, Evaluation, Score
from runtime.tensors import call_nbytes

from ..configfile import doc
from ..logs import get_logger
from .drift_budget import CostBudget, tell_cost

log = get_logger("drift")


@dataclass(frozen=True)
class DriftSection:
    """``[drift]``: on-device drift detection against the bundle's baseline."""

    enabled: bool = doc("Compare live inputs/outputs with the bundle's drift baseline (bundles packaged "
                        "by edgeship >= schema 2 with enough validation data carry one).", True)
    check_every_requests: int = doc("Score the window after this many requests.", 100)
    sample_every_requests: int = doc("Sketch one request in this many (1: every request; the others only count "
                                     "down on the request's thread). A check costs a few hundred microseconds "
                                     "in the checker thread, about a third less with 4 (lower min_samples "
                                     "with it): for models that run in tens of microseconds.", 1)
    check_interval_s: float = doc("Also score when this many seconds passed with fewer requests.", 30.0)
    window_checks: int = doc("The window scored: the requests of this many most recent checks.", 5)
    min_samples: int = doc("Do not judge a window holding fewer samples than this.", 200)
    sustain_checks: int = doc("Raise an alarm when a score is over its threshold this many checks in a "
                              "row; clear it when under for as many.", 3)
    max_pending_requests: int = doc("Calls kept for the next check at most; more are skipped (counted).", 1000)
    max_pending_bytes: int = doc("Bytes of tensors (inputs and outputs) kept for the next check at most: each "
                                 "kept call's bytes are added up, and a call that would take the sum over this "
                                 "is skipped (counted).", 16 << 20)
    max_cost_share: float = doc("Keep drift's CPU under this share of the model's inference time (0.02: 2%): "
                                "when the schedule above costs more (a model answering in tens of microseconds), "
                                "fewer requests are sketched and checks come less often (never more often than "
                                "set), so a shift takes more requests to alarm; the drift report and /metrics "
                                "give the schedule in force and the measured cost. 0: off, the schedule as set.",
                                0.0)
    psi_threshold: float = doc("Override the bundle's PSI threshold; 0 keeps the bundle's.", 0.0)
    out_of_range_threshold: float = doc("Override the bundle's out-of-range share threshold; -1 keeps it.", -1.0)
    nonfinite_threshold: float = doc("Override the bundle's NaN/Inf share threshold; -1 keeps it.", -1.0)

    def __post_init__(self) -> None:
        from ..configfile import ConfigError

        counts = ("check_every_requests", "sample_every_requests", "window_checks", "sustain_checks",
                  "max_pending_requests", "max_pending_bytes")
        bad = [k for k in counts if getattr(self, k) < 1] + (["check_interval_s"] if self.check_interval_s <= 0 else [])
        if bad or self.min_samples < 0:
            raise ConfigError(f"[drift] {', '.join(bad) or 'min_samples'} must be >= 1 (intervals > 0)")
        if not 0.0 <= self.max_cost_share < 1.0:
            raise ConfigError(f"[drift] max_cost_share must be >= 0 and < 1 (0.02 is 2%), got {self.max_cost_share}")

    def thresholds(self, bundle: DriftThresholds) -> DriftThresholds:
        return DriftThresholds(
            psi=self.psi_threshold if self.psi_threshold > 0 else bundle.psi,
            out_of_range_share=self.out_of_range_threshold if self.out_of_range_threshold >= 0
            else bundle.out_of_range_share,
            nonfinite_share=self.nonfinite_threshold if self.nonfinite_threshold >= 0 else bundle.nonfinite_share)


#: (score field, threshold field, reason code) of the alarmed figures
METRICS = (("psi", "psi", "drift.psi"), ("out_of_range_share", "out_of_range_share", "drift.out_of_range"),
           ("nonfinite_share", "nonfinite_share", "drift.nonfinite"))


@dataclass(frozen=True)
class AlarmChange:
    """An alarm raised or cleared: ``reason_code`` drift.psi / drift.out_of_range / drift.nonfinite."""

    transition: Transition
    reason_code: str
    name: str
    kind: str
    value: float
    threshold: float
    model: dict


@dataclass(frozen=True)
class DriftReport:
    """One check: the model, the window's scores, the active alarms. ``scores`` (with the
    per-feature PSI) is worked out from the check's window when first read."""

    model: dict
    checks: int
    window_samples: int
    evaluation: Evaluation = field(repr=False, compare=False)
    alarms: tuple[str, ...]          # "<reason_code>:<kind>:<name>" of every active alarm
    thresholds: DriftThresholds
    skipped: int
    schedule: dict = field(default_factory=dict)  # see DriftMonitor.schedule_json

    @cached_property
    def scores(self) -> tuple[Score, ...]:
        return tuple(self.evaluation.scores())

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "checks": self.checks, "window_samples": self.window_samples,
                "scores": [s.to_json() for s in self.scores], "alarms": list(self.alarms),
                "thresholds": self.thresholds.to_json(), "skipped_requests": self.skipped,
                "schedule": dict(self.schedule)}


class DriftMonitor:
    """Watches ``agent``'s traffic. ``start()`` it; ``stop()`` it before closing the agent."""

    def __init__(self, agent: Any, config: DriftSection | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.config = config or DriftSection()
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any, Any]] = []
        c = self.config
        self._max_count, self._max_bytes = c.max_pending_requests, c.max_pending_bytes
        self._bytes = 0                         # bytes of the pending calls' tensors (see observe)
        self._due = self._due_every = -(-c.check_every_requests // c.sample_every_requests)  # sketched calls to a check
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listeners: list[Callable[[DriftReport | None, list[AlarmChange]], None]] = []
        self._sha: str | None = None
        self._sketch: DriftSketch | None = None
        self._model: dict = {}
        self._alarms: dict[tuple[str, str, str], AlarmState] = {}
        self._checks = 0
        self._no_baseline: str | None = None
        self._th: DriftThresholds | None = None
        self.skipped = 0
        self.latest: DriftReport | None = None
        self._thread = threading.Thread(target=self._run, name="edgeship-drift", daemon=True)
        self._floor = self.schedule = Schedule(c.sample_every_requests, c.check_every_requests)
        self.check_cpu_s = 0.0                  # CPU of every check so far (the checker thread's clock)
        self._cost_told = False                 # drift.costly said for this model (no budget)
        self.budget = (CostBudget(c.max_cost_share, self._floor, agent_type=type(agent),
                                  samples_per_check=max(50, -(-2 * c.min_samples // c.window_checks)))
                       if c.max_cost_share > 0 else None)
        if self.budget is not None:
            self.observe = self.budget.timed(self.observe)  # type: ignore[method-assign]  (the one registered)
        self._attached, self._sampling = False, threading.Lock()  # the lock: _attached + the agent's sampling

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "DriftMonitor":
        self.attach()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.detach()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def attach(self) -> None:
        """Watch the agent's calls (:meth:`start` does it; alone: checks are the caller's, e.g. a
        benchmark's): register the observer, and have the agent hand it one call in the stride."""
        self.agent.add_tensor_observer(self.observe)
        self._attached = True
        self._apply(self.schedule)

    def detach(self) -> None:
        """Stop watching: the observer removed, the agent's tensor sampling back to every call (a
        re-plan in flight on the checker thread cannot set it again after: ``_sampling``)."""
        with self._sampling:
            if not self._attached:
                return
            self._attached = False
            try:
                self.agent.remove_tensor_observer(self.observe)
            except ValueError:
                pass
            self.agent.set_tensor_sampling(1)

    def add_listener(self, fn: Callable[[DriftReport | None, list[AlarmChange]], None]) -> None:
        """``fn(report, changes)`` after every check (report None when the model has no baseline)."""
        self._listeners.append(fn)

    # ------------------------------------------------------------ request thread
    def observe(self, sha: str, feeds: Any, outputs: Any) -> None:
        """The tensor observer: keep a reference to the call (bounded by count and bytes), wake the
        checker when due. The agent hands it one request in ``sample_every_requests`` (or what the
        cost budget chose; :meth:`_apply`). Each call's bytes (the ``nbytes`` of its two or three
        arrays) are added to the pending calls' sum; a call that would take it over
        ``max_pending_bytes`` (or the count over ``max_pending_requests``) is skipped. Not locked,
        like the count: two request threads at once can miss one call's bytes, rarely (the GIL)."""
        if sha != self._no_baseline:  # a model without a baseline: nothing to keep
            p = self._pending
            if len(p) < self._max_count:
                total = self._bytes + call_nbytes(feeds, outputs)
                if total <= self._max_bytes:
                    p.append((sha, feeds, outputs))
                    self._bytes = total
                else:
                    self.skipped += 1
            else:
                self.skipped += 1
        self._due = d = self._due - 1  # racy across request threads: a count, not an id
        if d <= 0:
            self._due = self._due_every
            self._wake.set()

    # ------------------------------------------------------------ checker thread
    def _run(self) -> None:
        while not self._stop.is_set():
            by_count = self._wake.wait(self.config.check_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check(by_count=by_count)
            except Exception as e:  # a broken check must not stop the next one; it is logged
                log.error("drift.check_failed", error=f"{type(e).__name__}: {e}")

    def check(self, *, by_count: bool = True) -> DriftReport | None:
        """Count the pending calls, score the window, run the alarm rule, tell the listeners.
        With no pending calls only a model switch is looked for (and told, when there was one).
        ``by_count`` False (a check from ``check_interval_s``, slow traffic): its batch is not the
        schedule's, so the cost budget does not plan from it. Every check restarts the count-down."""
        t0 = time.thread_time()
        with self._lock:
            batch, self._pending, self._bytes = self._pending, [], 0
            self._due = self._due_every  # the next check by count covers a whole schedule's batch
            switched, changes = self._reset_if_switched()
            if not batch and not changes:
                return self.latest
            report = None  # a model without a baseline, or a switch and no traffic yet
            if self._sketch is not None and batch:
                sha = self._sha
                self._sketch.add([(f, o) for s, f, o in batch if s == sha])
                self._sketch.close_slot()
                self._checks += 1
                report, more = self._judge()
                changes += more
                self.latest = report
        for fn in list(self._listeners):
            try:
                fn(report, changes)
            except Exception as e:
                log.error("drift.listener_failed", error=f"{type(e).__name__}: {e}")
        if batch:
            dt = time.thread_time() - t0
            self.check_cpu_s += dt
            # a check that saw a switch set the new model up over the old one's batch: not its cost
            cur = self.agent.current()
            latency = getattr(cur, "avg_latency_s", None) if cur is not None else None
            if self.budget is not None and not switched and by_count:
                self._apply(self.budget.after_check(dt, latency, self.schedule))
            elif self.budget is None and latency and not self._cost_told and self._checks >= 3:
                self._cost_told = True
                tell_cost(self._model.get("name"), dt, self.schedule.check_every, latency)
        return report

    @property
    def cost_share(self) -> float | None:
        """Drift's CPU per request / the inference time at the last check (with a budget)."""
        return self.budget.cost_share if self.budget is not None else None

    def _apply(self, new: Schedule | None) -> None:
        """Put schedule ``new`` in force (None: keep the one in force): the agent hands the observer
        one call in its ``sample_every`` (:meth:`Agent.set_tensor_sampling`, the others count down
        there; under ``_sampling``, so a re-plan in flight cannot set it again after a detach), and
        the count-down to the next check starts whole (its batch is measured as the schedule's)."""
        if new is None:
            return
        with self._sampling:
            self.schedule = new
            self._due_every = self._due = -(-new.check_every // new.sample_every)
            if self._attached:
                self.agent.set_tensor_sampling(new.sample_every)

    def status_json(self) -> dict[str, Any]:
        """What ``edgeship-agent status`` shows: the checks, window and active alarms of the served
        model, its worst PSI and where, the skipped requests and the schedule in force;
        ``no_baseline`` when the served model has none (never judged)."""
        r = self.latest
        worst = max(r.scores, key=lambda s: s.psi, default=None) if r is not None else None
        return {"checks": r.checks if r else 0, "window_samples": r.window_samples if r else 0,
                "alarms": list(r.alarms) if r else [], "skipped_requests": self.skipped,
                "worst": None if worst is None else {"name": worst.name, "kind": worst.kind,
                                                     "psi": round(worst.psi, 6)},
                "judged_from_samples": self.config.min_samples, "schedule": self.schedule_json(),
                "no_baseline": self._no_baseline is not None}

    def schedule_json(self) -> dict[str, Any]:
        """The schedule in force: ``sample_every_requests``, ``check_every_requests``, the
        ``max_cost_share`` budget (0: off) and the measured ``cost_share`` (None until known)."""
        s = self.schedule
        return {"sample_every_requests": s.sample_every, "check_every_requests": s.check_every,
                "max_cost_share": self.config.max_cost_share,
                "cost_share": None if self.cost_share is None else round(self.cost_share, 6)}

    def _reset_if_switched(self) -> tuple[bool, list[AlarmChange]]:
        """(whether the served model changed since the last check, the CLEARED alarms of the old one)."""
        cur = self.agent.current()
        sha = cur.ref.sha256 if cur is not None else None
        if sha == self._sha:
            return False, []
        cleared = [AlarmChange(Transition.CLEARED, key[0], key[2], key[1], 0.0, 0.0, self._model)
                   for key, st in self._alarms.items() if st.active]
        self._sha, self._alarms, self._checks, self.latest = sha, {}, 0, None
        if self.schedule != self._floor:  # a new model: its own costs, from the configured schedule
            self._apply(self._floor)
        self._cost_told = False
        if self.budget is not None:
            self.budget.reset()
        base = cur.info.drift if (cur is not None and self.config.enabled) else None
        self._th = self.config.thresholds(base.thresholds) if base is not None else None
        self._sketch = DriftSketch(base, window_slots=self.config.window_checks) if base is not None else None
        self._no_baseline = sha if base is None else None
        self._model = ({"name": cur.ref.name, "version": cur.ref.version, "release": cur.ref.release,
                        "sha256": cur.ref.sha256} if cur is not None else {})
        if cur is not None and base is None:
            log.info("drift.no_baseline", model=cur.ref.name, sha256=cur.ref.sha256)
        return True, cleared

    def _judge(self) -> tuple[DriftReport, list[AlarmChange]]:
        ev, th = self._sketch.evaluate(), self._th
        judged = ev.samples >= self.config.min_samples
        changes: list[AlarmChange] = []
        limits = (th.psi, th.out_of_range_share, th.nonfinite_share)
        if judged and (self._alarms or not all(_quiet(f, limits) for f in ev.figures)):
            for name, kind, _n, *values in ev.figures:
                for (_, _, code), value, limit in zip(METRICS, values, limits):
                    if code != "drift.psi" and kind in ("class", "confidence"):
                        continue
                    key = (code, kind, name)
                    if value <= limit and key not in self._alarms:
                        continue  # quiet and nothing pending: no state kept
                    state, tr = step(self._alarms.get(key, AlarmState()), value > limit,
                                     sustain=self.config.sustain_checks)
                    if state.active or state.over:
                        self._alarms[key] = state
                    else:
                        self._alarms.pop(key, None)
                    if tr is not None:
                        changes.append(AlarmChange(tr, code, name, kind, value, limit, self._model))
                        (log.warning if tr is Transition.RAISED else log.info)(
                            f"drift.alarm_{tr.value}", model=self._model.get("name"), reason=code, tensor=name,
                            kind=kind, value=round(value, 4), threshold=limit)
        active = tuple(sorted(f"{k[0]}:{k[1]}:{k[2]}" for k, st in self._alarms.items() if st.active))
        return DriftReport(model=self._model, checks=self._checks, window_samples=ev.samples, evaluation=ev,
                           alarms=active, thresholds=th, skipped=self.skipped,
                           schedule=self.schedule_json()), changes


def _quiet(fig: tuple, limits: tuple[float, float, float]) -> bool:
    """No figure of ``fig`` over its threshold (class and confidence are judged by PSI only)."""
    _, kind, _, psi, oor, bad = fig
    return psi <= limits[0] and (kind in ("class", "confidence") or (oor <= limits[1] and bad <= limits[2]))
