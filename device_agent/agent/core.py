"""The agent: serves the store's active model in process and switches models without dropping requests.

Sessions are leased: every inference takes a lease on the session that is current when it
starts and returns it when done. A switch (``switch_to``, ``rollback``) opens the new
session *before* touching anything, persists the pointer change in the store, then swaps
the current session under the lock; requests in flight finish on the old session, new
ones get the new one, and the old session is closed when its last lease is returned.

Invariants:
- The session being served always belongs to a complete model in the store.
- A failed switch (the new model does not load, the store refuses) changes nothing.
- A model with leases outstanding is reported by :meth:`Agent.in_use` so GC keeps it.
- Observers run after every inference that reached the model (``ok`` False when the
  engine raised); an observer that raises is logged and does not affect the request.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from runtime import Session, available_engines, engine_version, open_model
from runtime.contracts.bundle import BundleInfo
from runtime.errors import EdgeshipRuntimeError, InputMismatchError
from runtime.spec import deploy_precision_hint

from .. import __version__
from ..config import AgentConfig
from ..logs import get_logger
from ..store import ModelRef, NoPreviousModelError, Store, StoreError
from .errors import AgentError, ModelNotFoundError, ModelSwitchError, NotReadyError
from .metrics import MetricsSnapshot, ModelEvent, ModelEventCounts, Outcome, RequestWindow
from .taps import TensorTaps, call_observers

log = get_logger("agent")

#: ``fn(model_sha, ok, latency_s)`` after every request that reached the model
RequestObserver = Callable[[str, bool, float], None]
_SWAP_EVENTS = {"model.switched": ModelEvent.SWITCH, "model.rolled_back": ModelEvent.ROLLBACK,
                "model.reloaded": ModelEvent.RELOAD}


@dataclass(eq=False)
class LoadedModel:
    """An open session of a stored model, with its lease count."""

    ref: ModelRef
    info: BundleInfo
    session: Session
    leases: int = 0
    retired: bool = False
    closed: bool = False
    loaded_at: float = field(default_factory=time.time)
    #: moving average of a successful call's latency per request it served (a batched call's over
    #: its requests: what the drift cost budget weighs; None until the first call); read racily
    avg_latency_s: float | None = None


class Agent(TensorTaps):
    """Serve the active model of ``config.state_dir``'s store. Thread-safe."""

    def __init__(self, config: AgentConfig, *, store: Store | None = None) -> None:
        """Open the store and load its active model (if any).

        A model that fails to load is logged and leaves the agent not ready (``status()``
        says why); it does not raise, so a supervisor can still reach the control API.
        """
        self.config = config
        self.store = store if store is not None else Store(config.state_dir)
        self.metrics = RequestWindow()
        self.model_events = ModelEventCounts()
        TensorTaps.__init__(self)
        self._cond = threading.Condition()
        self._switch_lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._live: set[LoadedModel] = set()
        self._observers: list[RequestObserver] = []
        self._load_error: str | None = None
        #: set while the model is unloaded on purpose (see :meth:`unload`): (why, retry-after s)
        self._unloaded: tuple[str, float] | None = None
        self._batcher = None
        self._capture: Any = None  # set_capture
        active = self.store.active()
        if active is not None:
            try:
                self._current = self._load(active.sha256)
                self._live.add(self._current)
                self.model_events.add(ModelEvent.LOAD)
                log.info("model.loaded", model=active.name, sha256=active.sha256, release=active.release,
                         load_s=round(self._current.session.load_time_s, 4))
            except (AgentError, StoreError, EdgeshipRuntimeError, OSError, ValueError) as e:
                self._load_error = f"{active.sha256[:12]}: {e}"
                if not isinstance(e, ModelSwitchError):  # _load counted the engine's failure already
                    self.model_events.add(ModelEvent.LOAD_FAILED)
                log.error("model.load_failed", model=active.name, sha256=active.sha256, error=str(e))
        b = config.serving.batching
        if b.max_batch_size > 1:
            from .batching import Batcher

            self._batcher = Batcher(self, max_batch_size=b.max_batch_size, max_wait_s=b.max_wait_ms / 1e3)

    # ------------------------------------------------------------------ serving
    def infer(self, feeds: Mapping[str, np.ndarray], model: str | None = None) -> dict[str, np.ndarray]:
        """Run the active model once. ``model`` (a name or sha256), when given, must match it.

        Raises:
            ModelNotFoundError: ``model`` is not the model being served.
            NotReadyError: no model is loaded.
            InputMismatchError: feeds with wrong names, dtypes or shapes (the model did not run).
            InferenceError: the engine failed (counted as an error, observers told ``ok=False``).
        """
        return self.infer_traced(feeds, model)[0]

    def infer_traced(self, feeds: Mapping[str, np.ndarray], model: str | None = None, *,
                     expected: Any = None) -> tuple[dict[str, np.ndarray], ModelRef]:
        """Like :meth:`infer`, also returning the model that ran (a switch may happen any time).
        ``expected``: the classes the caller expects per sample, for capture rules (:meth:`set_capture`)."""
        cap, lease = self._capture, None
        try:
            if self._batcher is not None and self._batcher.accepts(feeds):
                out, ref = self._batcher.submit(feeds, model)
            else:
                lease = self.acquire(model)
                try:
                    out, ref = self.run_on(lease, lambda: lease.session.run(feeds)), lease.ref
                finally:
                    self.release(lease)
        except Exception as e:
            ran = lease or self._current  # bad input or no model: the model did not run
            if cap is not None and ran is not None and not isinstance(e, (InputMismatchError, AgentError)):
                _tap(cap.on_failure, ran.ref.sha256, feeds, e)
            raise
        if self._tensor_observers:
            self.tap_tensors(ref.sha256, feeds, out)
        if cap is not None:
            _tap(cap.on_result, ref.sha256, feeds, out, expected)
        return out, ref

    def set_capture(self, tap: Any) -> None:
        """Hand every call to ``tap`` (a ``device_agent.capture.recorder.CaptureRecorder``; None
        stops it): ``on_result(sha, feeds, outputs, expected)``, ``on_failure(sha, feeds, error)``,
        on the request's thread (it must be cheap; an error in it is logged, never raised)."""
        self._capture = tap

    @property
    def capture(self) -> Any:
        """The capture recorder set with :meth:`set_capture` (None when capture is off)."""
        return self._capture

    def run_on(self, lease: LoadedModel, fn: Callable[[], dict], *, requests: int = 1) -> dict:
        """Run ``fn`` for a leased model, counting it in metrics and telling observers."""
        t0 = time.perf_counter()
        try:
            out = fn()
        except InputMismatchError:
            for _ in range(requests):
                self.metrics.record(lease.ref.sha256, Outcome.REJECTED)
            raise
        except Exception:
            dt = time.perf_counter() - t0
            for _ in range(requests):
                self.metrics.record(lease.ref.sha256, Outcome.ERROR, dt)
                self._notify(lease.ref.sha256, False, dt)
            raise
        dt = time.perf_counter() - t0
        avg, each = lease.avg_latency_s, dt / requests  # a batched call's time is its requests'
        lease.avg_latency_s = each if avg is None else 0.9 * avg + 0.1 * each
        for _ in range(requests):
            self.metrics.record(lease.ref.sha256, Outcome.OK, dt)
            self._notify(lease.ref.sha256, True, dt)
        return out

    def acquire(self, model: str | None = None) -> LoadedModel:
        """Lease the current model (pair with :meth:`release`). Raises ModelNotFoundError, NotReadyError."""
        with self._cond:
            cur = self._current
            if cur is None:
                raise self.not_ready_error()
            if model is not None and model not in (cur.ref.name, cur.ref.sha256):
                raise ModelNotFoundError(f"model {model!r} is not served here; serving {cur.ref.name!r}")
            cur.leases += 1
            return cur

    def release(self, lease: LoadedModel) -> None:
        with self._cond:
            lease.leases -= 1
            if lease.leases == 0 and lease.retired:
                self._close(lease)
                self._cond.notify_all()

    def current(self) -> LoadedModel | None:
        """The model being served now (no lease taken; do not run it without one)."""
        return self._current

    def not_ready_error(self) -> NotReadyError:
        """The error a request gets while no model is loaded (says why, and when to retry)."""
        unloaded = self._unloaded
        if unloaded is not None:
            return NotReadyError(f"no model is loaded: {unloaded[0]}; retry shortly", retry_after_s=unloaded[1])
        return NotReadyError("no model is loaded" + (f" ({self._load_error})" if self._load_error else ""))

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def batching(self) -> bool:
        return self._batcher is not None

    # ---------------------------------------------------------------- switching
    def open_session(self, sha256: str) -> Session:
        """Open a stored model on its engine with the configured threads (not served)."""
        info = self.store.info(sha256)
        threads = self.config.serving.engine_threads or None
        return open_model(self.store.model_dir(sha256) / info.model_path, engine=info.engine, threads=threads,
                          precision_hint=deploy_precision_hint(info.engine, info.precision.value))

    def switch_to(self, sha256: str, *, session: Session | None = None,
                  drain_timeout_s: float | None = None) -> ModelRef:
        """Make a stored model active and serve it; in-flight requests finish on the old one.

        ``session`` is a session of that model the caller already opened (e.g. for a gate);
        the agent takes ownership. Waits up to ``drain_timeout_s`` (default from config)
        for the old model's requests; it is closed when the last one returns. Switching to the
        model already active and serving changes nothing (a given ``session`` is closed).

        Raises:
            ModelNotInStoreError: no such model (nothing changed).
            ModelSwitchError: the model does not load (nothing changed).
        """
        with self._switch_lock:
            cur, active = self._current, self.store.active()
            if cur is not None and active is not None and cur.ref.sha256 == sha256 == active.sha256:
                if session is not None:
                    session.close()
                return cur.ref  # already active and serving: nothing to switch
            loaded = self._load(sha256, session=session)
            try:
                self.store.activate(sha256)
            except BaseException:
                loaded.session.close()
                raise
            return self._swap(loaded, "model.switched", drain_timeout_s)

    def rollback(self, *, drain_timeout_s: float | None = None) -> ModelRef:
        """Make the previous model active again and serve it. Returns it.

        Raises:
            NoPreviousModelError: nothing to roll back to (nothing changed).
            ModelSwitchError: the previous model does not load (nothing changed).
        """
        with self._switch_lock:
            prev = self.store.previous()
            if prev is None:
                raise NoPreviousModelError(f"{self.store.root}: there is no previous model to roll back to")
            loaded = self._load(prev.sha256)
            try:
                self.store.rollback()
            except BaseException:
                loaded.session.close()
                raise
            return self._swap(loaded, "model.rolled_back", drain_timeout_s)

    def reload_pointers(self) -> ModelRef | None:
        """Serve whatever the store's pointers say is active (after an offline change)."""
        with self._switch_lock:
            active = self.store.active()
            cur = self._current
            if active is None or (cur is not None and cur.ref.sha256 == active.sha256):
                return active
            return self._swap(self._load(active.sha256), "model.reloaded", None)

    def unload(self, *, reason: str, retry_after_s: float = 1.0,
               drain_timeout_s: float | None = None) -> ModelRef | None:
        """Stop serving and close the current model (pointers unchanged) to free its memory.

        Until the next switch, rollback or :meth:`reload_pointers`, requests get
        :class:`NotReadyError` carrying ``reason`` and ``retry_after_s`` (HTTP 503 with
        Retry-After). Waits up to ``drain_timeout_s`` (default from config) for requests in
        flight; returns the model that was unloaded (None if none was loaded).
        """
        with self._switch_lock:
            with self._cond:
                old, self._current = self._current, None
                self._unloaded = (reason, retry_after_s)
                if old is None:
                    return None
                old.retired = True
                if old.leases == 0:
                    self._close(old)
            self.model_events.add(ModelEvent.UNLOAD)
            log.warning("model.unloaded", model=old.ref.name, sha256=old.ref.sha256, reason=reason)
            timeout = self.config.serving.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
            with self._cond:
                if not self._cond.wait_for(lambda: old.closed, timeout=timeout):
                    log.warning("model.drain_timeout", model=old.ref.name, sha256=old.ref.sha256)
            return old.ref

    def _load(self, sha256: str, *, session: Session | None = None) -> LoadedModel:
        info = self.store.info(sha256)
        try:
            sess = session if session is not None else self.open_session(sha256)
        except EdgeshipRuntimeError as e:
            self.model_events.add(ModelEvent.LOAD_FAILED)
            raise ModelSwitchError(f"model {info.name} {sha256[:12]} did not load: {e}") from e
        return LoadedModel(ref=ModelRef.of(sha256, info), info=info, session=sess)

    def _swap(self, new: LoadedModel, event: str, drain_timeout_s: float | None) -> ModelRef:
        t0 = time.perf_counter()
        self.model_events.add(ModelEvent.LOAD)
        self.model_events.add(_SWAP_EVENTS[event])
        with self._cond:
            old, self._current = self._current, new
            self._live.add(new)
            self._load_error = None
            self._unloaded = None
            if old is not None:
                old.retired = True
                if old.leases == 0:
                    self._close(old)
        log.info(event, model=new.ref.name, sha256=new.ref.sha256, release=new.ref.release,
                 previous=old.ref.sha256 if old else None)
        if old is not None:
            timeout = self.config.serving.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
            with self._cond:
                drained = self._cond.wait_for(lambda: old.closed, timeout=timeout)
            log.debug("model.drained" if drained else "model.drain_timeout", model=old.ref.name,
                      sha256=old.ref.sha256, waited_s=round(time.perf_counter() - t0, 4))
        if self.config.agent.gc_after_switch:
            try:
                self.gc()
            except OSError as e:  # the switch is done; a failed clean-up is only logged
                log.error("store.gc_failed", error=str(e))
        return new.ref

    def _close(self, m: LoadedModel) -> None:
        # called with self._cond held
        if not m.closed:
            m.closed = True
            self._live.discard(m)
            try:
                m.session.close()
            except Exception as e:  # closing is best effort; the session is gone either way
                log.warning("model.close_failed", model=m.ref.name, error=str(e))

    # ------------------------------------------------------------ housekeeping
    def in_use(self) -> set[str]:
        """Shas of models with a session open (serving or still draining)."""
        with self._cond:
            return {m.ref.sha256 for m in self._live}

    def gc(self, *, min_age_s: float | None = None) -> list[str]:
        """Delete stored models that are not active, previous, in use, or installed less than
        ``min_age_s`` ago (default: config ``agent.gc_min_age_s``)."""
        age = self.config.agent.gc_min_age_s if min_age_s is None else min_age_s
        removed = self.store.gc(self.in_use(), min_age_s=age)
        if removed:
            log.info("store.gc", removed=removed)
        return removed

    def add_request_observer(self, fn: RequestObserver) -> None:
        """Call ``fn(model_sha, ok, latency_s)`` after every inference that reached the model."""
        self._observers.append(fn)

    def remove_request_observer(self, fn: RequestObserver) -> None:
        self._observers.remove(fn)

    def _notify(self, sha: str, ok: bool, dt: float) -> None:
        call_observers(self._observers, sha, ok, dt)

    def metrics_snapshot(self) -> dict[str, Any]:
        """The current metrics window as JSON (does not end the window)."""
        return self.metrics.snapshot().to_json()

    def roll_metrics_window(self) -> MetricsSnapshot:
        """End the metrics window and return it (for periodic reporters)."""
        return self.metrics.roll()

    def status(self) -> dict[str, Any]:
        active, previous = self.store.active(), self.store.previous()
        cur = self._current
        return {
            "agent_version": __version__,
            "engines": {e.value: engine_version(e) for e in available_engines()},
            "arch": platform.machine(),
            "active": active.to_json() if active else None,
            "previous": previous.to_json() if previous else None,
            "serving": cur.ref.to_json() if cur else None,
            "ready": cur is not None,
            "load_error": self._load_error,
            "unloaded": self._unloaded[0] if self._unloaded else None,
        }

    def close(self) -> None:
        """Stop batching and close every session (requests still running finish first)."""
        if self._batcher is not None:
            self._batcher.close()
        with self._cond:
            self._current = None
            for m in list(self._live):
                m.retired = True
                if m.leases == 0:
                    self._close(m)

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tap(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:  # capture never fails a request
        log.error("capture.failed", error=f"{type(e).__name__}: {e}")
