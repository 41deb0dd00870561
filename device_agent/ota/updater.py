"""The update shell: runs the state machine of ``states.py`` against the real world.

For each state it persists the journal *first*, then does the state's work, then asks the
pure core for the next journal. Work per state is idempotent or checked against the store,
so :meth:`Updater.recover` can finish or undo whatever a crash interrupted:

- before the switch the old model stays (fetch/verify/stage resume; a crash during the
  gate fails the update);
- between switch and commit: roll back, or keep the new model and restart the trial,
  per ``recovery_policy``; crashes with the new model active are counted across restarts;
- after commit the new model stays.

Which release an update may go to is :func:`.releases.choose` (the release-counter rule,
the penalty box) on ``update/releases.json``, where every outcome is recorded.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable

from runtime.contracts.bundle import BundleError, read_bundle_info
from runtime.contracts.statedir import StateDir

from ..logs import get_logger
from . import states as sm
from .compat import device_problems
from .config import UpdateSection
from .diskspace import disk_full, is_disk_full, preflight
from .errors import (
    GateMemoryError, MixAndMatchError, NoSuchTargetError, Reason, ReleaseRollbackError, StageError, SwitchError,
    UpdateBusyError, UpdateError, WrongTargetError,
)
from .events import UpdateEvent, UpdateResult
from .gate import available_memory_bytes, make_room, reload_after_unload, run_gate
from .journal import JournalFile
from .releases import Authority, Penalty, ReleaseMemoryFile, choose, floor, newest_allowed
from .states import Action, Journal, State
from .trial import golden_feeds, run_trial
from .trust import Candidate, TrustedRepo, TrustedTime, utcnow

log = get_logger("update")

__all__ = ["Updater", "UpdateEvent", "UpdateResult"]


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


class Updater:
    """Signed model updates for one agent. One update at a time; thread-safe entry points."""

    def __init__(self, config, store, agent, *, update_config: UpdateSection | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 available_bytes: Callable[[], int] | None = None) -> None:
        """``available_bytes``: free memory now, in bytes (default: psutil's ``available``)."""
        self.config, self.store, self.agent = config, store, agent
        self.available_bytes = available_bytes or available_memory_bytes
        self.cfg = update_config if update_config is not None else UpdateSection.of(config)
        self.paths = StateDir(Path(store.root))
        self.journal = JournalFile(self.paths)
        self.releases = ReleaseMemoryFile(self.paths.release_memory)
        self._authority = Authority.LOCAL
        self.clock = clock
        self.time = TrustedTime(self.paths.trusted_time, clock)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._session = None  # gate session handed to the switch
        self._repo: TrustedRepo | None = None
        self._on_event: Callable | None = None
        #: the error that ended the last update (None when it did not end in an error)
        self.last_error: UpdateError | None = None

    # ------------------------------------------------------------------ public
    def update(self, model: str, release: int | None = None, deployment_id: str | None = None,
               on_event: Callable[[UpdateEvent], None] | None = None, *,
               repository_url: str | None = None, authority: Authority = Authority.LOCAL) -> UpdateResult:
        """Run one update of ``model`` to ``release`` (default: the newest signed one) to its end.

        Errors end the update (state failed/rolled_back with a reason) instead of raising.
        ``repository_url`` overrides ``[update] repository_url`` for this update only.
        ``authority``: ``OPERATOR`` for an operator-signed desired state, which may go back to
        a release this device ran before (docs/ota.md); everything else goes only forward.

        Raises:
            UpdateBusyError: another update is running or an unfinished one awaits ``recover()``.
        """
        if not self._lock.acquire(blocking=False):
            raise UpdateBusyError("an update is already running")
        base_cfg = self.cfg
        try:
            old = self.journal.load()
            if old is not None and not old.finished:
                raise UpdateBusyError(f"update {old.deployment_id} is unfinished ({old.state.value}); "
                                      f"run recover() / restart the agent first")
            self._cancel.clear()
            self.last_error = None
            self._on_event = on_event
            self._authority = authority
            if repository_url:
                base_cfg, self.cfg = self.cfg, dataclasses.replace(self.cfg, repository_url=repository_url)
            j = sm.begin(deployment_id=deployment_id or uuid.uuid4().hex[:12], model=model,
                         requested_release=release, now=self._now())
            self._save(j, None)
            return self._run(j)
        finally:
            self._close_session()
            self._repo = None
            self.cfg = base_cfg
            self._authority = Authority.LOCAL
            self._lock.release()

    def recover(self, on_event: Callable[[UpdateEvent], None] | None = None) -> UpdateResult | None:
        """Finish or undo an update a crash interrupted (call at start-up). None if there is none."""
        with self._lock:
            j = self.journal.load()
            if j is None or j.finished:
                return None
            self._on_event = on_event
            try:
                return self._recover(j)
            finally:
                self._close_session()
                self._repo = None

    def cancel(self) -> None:
        """Abort a running update if it has not switched yet (after the switch: roll back)."""
        self._cancel.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no update or recovery runs (e.g. after :meth:`cancel`). False on timeout."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        self._lock.release()
        return True

    def last(self) -> Journal | None:
        return self.journal.load()

    def check(self, model: str) -> Candidate | None:
        """The newest signed, compatible release above the floor and not boxed, or None."""
        return self.poll_check(model)[0]

    def poll_check(self, model: str) -> tuple[Candidate | None, list[Penalty]]:
        """``(check's candidate, the boxed releases above the floor it passed over)``.
        Raises SecurityError, FetchError: the refresh failed."""
        repo = self._new_repo()  # its own ngclient session: a refresh happens once per session
        repo.refresh()
        return newest_allowed(repo.candidates(model), mm=self.releases.load().of(model),
                              top=self._installed_release(model),
                              fits=lambda c: not self._device_problems(c.facts.requirements))

    def refresh_trust(self) -> None:
        """Refresh TUF now: a new root (a rotated operator key) lands in update/metadata/. Raises as check."""
        self._new_repo().refresh()

    # ------------------------------------------------------------------ machine
    def _run(self, j: Journal) -> UpdateResult:
        handlers = {State.FETCH: self._fetch, State.VERIFY: self._verify, State.STAGE: self._stage,
                    State.GATE: self._gate, State.SWITCH: self._switch, State.TRIAL: self._trial}
        while not j.finished:
            try:
                if self._cancel.is_set() and j.state in sm.BEFORE_SWITCH:
                    j = self._to(j, State.ABORTED, reason=Reason.CANCELLED, detail="cancelled")
                    continue
                j = handlers[j.state](j)
            except UpdateError as e:
                j = self._on_error(j, e)
            except OSError as e:
                if not is_disk_full(e):
                    raise
                j = self._on_disk_full(j, e)
        self._finish(j)
        return UpdateResult(j.deployment_id, j.model, j.release, j.state, j.reason or Reason.OK, j.detail,
                            j.target_sha256)

    def _on_error(self, j: Journal, e: UpdateError) -> Journal:
        self.last_error = e
        log.error("update.error", model=j.model, state=j.state.value, reason=e.reason.value, error=str(e),
                  security=e.is_security)
        if j.state in sm.BEFORE_SWITCH:
            return self._to(j, State.FAILED, reason=e.reason, detail=str(e))
        if j.state is State.SWITCH and not self._new_active(j):
            return self._to(j, State.FAILED, reason=e.reason, detail=str(e))
        return self._roll_back(j, e.reason, str(e))

    def _on_disk_full(self, j: Journal, e: OSError) -> Journal:
        """ENOSPC in any state: partial files removed, then failed like any error (update.disk_full).
        If even the failed journal cannot be written, it is removed: no journal is idle too."""
        err = disk_full(self.paths, state=j.state.value, sha256=j.target_sha256, length=j.target_length, cause=e)
        try:
            return self._on_error(j, err)
        except OSError as e2:
            if not is_disk_full(e2) or j.state not in sm.BEFORE_SWITCH:
                raise
            self.paths.journal.unlink(missing_ok=True)
            return sm.advance(j, State.FAILED, now=self._now(), reason=err.reason, detail=str(err))

    def _recover(self, j: Journal) -> UpdateResult:
        j = sm.reenter(j, now=self._now())
        plan = sm.plan_recovery(j, policy=self.cfg.recovery_policy, max_state_entries=self.cfg.max_state_entries,
                                max_trial_crashes=self.cfg.trial_max_crashes, new_model_active=self._new_active(j))
        log.warning("update.recover", model=j.model, state=j.state.value, action=plan.action.value,
                    entries=j.entries, reason=plan.reason.value if plan.reason else None)
        if plan.action is Action.RESUME:
            self._save(j, None)  # re-enters the state: its work runs again
        elif plan.action is Action.RESUME_TRIAL:
            j = _replace(j, trial_crashes=j.trial_crashes + 1)
            if j.state is State.SWITCH:
                j = self._to(j, State.TRIAL)
            else:
                self._save(j, None)
            self.agent.reload_pointers()
        else:
            self._save(j, None, entering=False)  # record the restart, do not redo the state's work
            if plan.action is Action.FAIL:
                j = self._to(j, State.FAILED, reason=plan.reason, detail=plan.detail)
            elif plan.action is Action.ENSURE_OLD_AND_FAIL:
                self._restore_old(j)
                j = self._to(j, State.FAILED, reason=plan.reason, detail=plan.detail)
            else:  # ROLL_BACK: the restart that led here is one more crash with the new model active
                if j.state is State.SWITCH:
                    j = self._to(j, State.TRIAL, trial_crashes=j.trial_crashes + 1)
                else:
                    j = _replace(j, trial_crashes=j.trial_crashes + 1)
                j = self._roll_back(j, plan.reason, plan.detail)
        return self._run(j)

    def _to(self, j: Journal, to: State, **kw) -> Journal:
        nj = sm.advance(j, to, now=self._now(), **kw)
        self._save(nj, j)
        return nj

    def _save(self, j: Journal, prev: Journal | None, *, entering: bool = True) -> None:
        self.journal.save(j, previous=prev, entering=entering)
        log.info("update.state", model=j.model, deployment_id=j.deployment_id, state=j.state.value,
                 release=j.release, reason=j.reason.value if j.reason else None, detail=j.detail or None)
        if self._on_event is not None:
            ev = UpdateEvent(j.deployment_id, j.model, j.release, j.state.value,
                             j.reason.value if j.reason else None, j.detail, j.updated_utc)
            try:
                self._on_event(ev)
            except Exception as e:  # a broken listener must not break the update
                log.error("update.event_listener_failed", model=j.model, error=str(e))

    # ------------------------------------------------------------------ states
    def _fetch(self, j: Journal) -> Journal:
        repo = self._trusted_repo()
        if self._repo_refreshed is not repo:
            repo.refresh()
            self._repo_refreshed = repo
        c = self._choose(repo, j)
        if c is None:
            return self._to(j, State.ABORTED, reason=Reason.UP_TO_DATE,
                            detail=f"release {self._installed_release(j.model)} is the newest")
        problems = self._device_problems(c.facts.requirements)
        if problems:  # refused before a single byte of the bundle is downloaded
            raise WrongTargetError(f"{c.target_path}: not for this device: " + "; ".join(problems))
        j = _replace(j, target_path=c.target_path, target_sha256=c.sha256, target_length=c.length,
                     release=c.release)
        self.journal.save(j, entering=False)
        if not (self.store.models_dir / c.sha256).is_dir():  # refused before a byte is downloaded
            preflight(self.paths, sha256=c.sha256, length=c.length, target=c.target_path)
        repo.download(c)
        return self._to(j, State.VERIFY)

    def _choose(self, repo: TrustedRepo, j: Journal) -> Candidate | None:
        cands = repo.candidates(j.model)
        if j.target_sha256:  # resuming: the same signed target, or nothing
            for c in cands:
                if c.sha256 == j.target_sha256:
                    return c
            raise NoSuchTargetError(f"{j.target_path} is no longer signed in the repository")
        return choose(cands, model=j.model, requested=j.requested_release,
                      mm=self.releases.load().of(j.model), store_refs=self._store_refs(j.model),
                      authority=self._authority)

    def _verify(self, j: Journal) -> Journal:
        repo = self._trusted_repo()
        if repo is not self._repo_refreshed:
            repo.refresh()
            self._repo_refreshed = repo
        c = self._choose(repo, j)
        path = repo.download(c)  # returns the cached file after re-checking its hashes
        repo.verify_file(c, path)
        try:
            info = read_bundle_info(path)
        except BundleError as e:
            raise MixAndMatchError(f"{c.target_path}: signed bytes are not a valid bundle: {e}") from e
        diff = c.facts.mismatches(info)
        if diff:
            raise MixAndMatchError(f"{c.target_path}: model.json differs from the signed facts in {diff}")
        problems = self._device_problems(info.requirements.to_json())
        if problems:
            raise WrongTargetError(f"{c.target_path}: " + "; ".join(problems))
        return self._to(j, State.STAGE)

    def _stage(self, j: Journal) -> Journal:
        from ..store import StoreError

        path = self.paths.download(j.target_sha256)
        if not (self.store.models_dir / j.target_sha256).is_dir():  # installed before a crash: done
            try:
                self.store.install_bundle(path, expected_sha256=j.target_sha256)
            except (StoreError, OSError) as e:
                if is_disk_full(e):
                    raise  # update.disk_full, see _on_disk_full
                raise StageError(f"{j.target_path}: {e}") from e
        path.unlink(missing_ok=True)
        return self._to(j, State.GATE)

    def _gate(self, j: Journal) -> Journal:
        sha = j.target_sha256
        info = self.store.info(sha)
        threads = (self.config.serving.engine_threads or None) if self.config is not None else None
        unloaded = make_room(agent=self.agent, info=info, cfg=self.cfg, available_bytes=self.available_bytes,
                             why=f"making room to test {j.model} release {j.release}")
        try:
            report, self._session = run_gate(model_dir=self.store.model_dir(sha), info=info, cfg=self.cfg,
                                             threads=threads, available_bytes=self.available_bytes)
        except BaseException:
            if unloaded:  # the old model serves again before the update ends as failed
                reload_after_unload(self.agent)
            raise
        log.info("update.gate_passed", model=j.model, load_s=round(report.load_s, 4),
                 median_ms=report.median_latency_ms, precision=report.executed_precision)
        active = self.store.active()
        return self._to(j, State.SWITCH, previous_sha256=active.sha256 if active else None,
                        detail=f"gate passed: median {report.median_latency_ms or 0:.2f} ms")

    def _switch(self, j: Journal) -> Journal:
        if not self._new_active(j) or self._serving() != j.target_sha256:
            session, self._session = self._session, None
            try:
                self.agent.switch_to(j.target_sha256, session=session)
            except Exception as e:
                raise SwitchError(f"switch to {j.target_sha256[:12]} failed: {e}") from e
        return self._to(j, State.TRIAL)

    def _trial(self, j: Journal) -> Journal:
        info = self.store.info(j.target_sha256)
        verdict, reason, detail = run_trial(
            agent=self.agent, sha256=j.target_sha256, cfg=self.cfg, latency_budget_ms=info.latency_budget_ms,
            probe_feeds=golden_feeds(self.store.model_dir(j.target_sha256), info), cancelled=self._cancel.is_set)
        if verdict is sm.Verdict.PASS:
            return self._to(j, State.COMMIT, reason=Reason.OK, detail=detail)
        return self._roll_back(j, reason or Reason.TRIAL_ERROR_RATE, detail)

    # ------------------------------------------------------------------ helpers
    def _roll_back(self, j: Journal, reason: Reason, detail: str) -> Journal:
        if j.previous_sha256 is None:
            return self._to(j, State.FAILED, reason=reason, detail=detail + "; no previous model: the new one stays")
        self._restore_old(j)
        return self._to(j, State.ROLLED_BACK, reason=reason, detail=detail)

    def _restore_old(self, j: Journal) -> None:
        """Make the model active before the switch active and served again (idempotent)."""
        old = j.previous_sha256
        if old is None:
            return
        cur = self.agent.current()
        if cur is not None and cur.ref.sha256 != old:
            try:
                make_room(agent=self.agent, info=self.store.info(old), cfg=self.cfg,
                          available_bytes=self.available_bytes, why=f"rolling {j.model} back to {old[:12]}")
            except GateMemoryError as e:  # roll back anyway: the old model ran here before
                log.warning("update.rollback_memory", model=j.model, error=str(e))
        active, prev = self.store.active(), self.store.previous()
        if active is not None and active.sha256 == old:
            self.agent.reload_pointers()
        elif prev is not None and prev.sha256 == old:
            self.agent.rollback()
        else:
            self.agent.switch_to(old)

    def _finish(self, j: Journal) -> None:
        """Remember the outcome; drop downloaded bundles; keep partial downloads for a retry
        unless they failed a check."""
        self._remember(j)
        self._close_session()
        for p in self.paths.downloads.glob("*.tar"):
            p.unlink(missing_ok=True)
        if j.reason is not None and j.reason.value.startswith("security."):
            for p in self.paths.partial_downloads.glob("*.part"):
                p.unlink(missing_ok=True)

    def _remember(self, j: Journal) -> None:
        """A committed release joins ``ran`` (with the model it replaced); a failed gate or trial, the box."""
        prev = self.store.ref(j.previous_sha256) if j.state is State.COMMIT and j.previous_sha256 and \
            (self.store.models_dir / j.previous_sha256).is_dir() else None
        if j.target_sha256 is not None and j.release is not None:
            self.releases.record(model=j.model, release=j.release, sha256=j.target_sha256, state=j.state.value,
                                 reason=j.reason.value if j.reason else None, detail=j.detail, utc=j.updated_utc,
                                 replaced=prev)

    def _close_session(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            s.close()

    def _trusted_repo(self) -> TrustedRepo:
        if self._repo is None:
            self._repo = self._new_repo()
            self._repo_refreshed = None
        return self._repo

    def _new_repo(self) -> TrustedRepo:
        if not self.cfg.repository_url:
            raise NoSuchTargetError(
                "no repository configured: [update] repository_url is empty in the config this agent "
                "started with (set it and restart the agent, or pass `edgeship-agent update --repo "
                "URL_OR_DIR`)")
        return TrustedRepo(
            repository=self.cfg.repository_url, root_json=self.cfg.root_json_path(self.paths),
            metadata_dir=self.paths.tuf_metadata, download_dir=self.paths.downloads,
            partial_dir=self.paths.partial_downloads,
            trusted_time=self.time, timeout_s=self.cfg.download_timeout_s)

    _repo_refreshed: TrustedRepo | None = None

    def _device_problems(self, requirements) -> list[str]:
        return device_problems(requirements, max_onnx_opset=self.cfg.max_onnx_opset)

    def _store_refs(self, model: str) -> list[tuple[int, str]]:
        return [(r.release, r.sha256) for r in (self.store.active(), self.store.previous())
                if r is not None and r.name == model]

    def _installed_release(self, model: str) -> int:  # the floor: the newest release of model it ran
        return floor(self.releases.load().of(model), self._store_refs(model))

    def _new_active(self, j: Journal) -> bool:
        a = self.store.active()
        return a is not None and j.target_sha256 is not None and a.sha256 == j.target_sha256

    def _serving(self) -> str | None:
        cur = self.agent.current()
        return cur.ref.sha256 if cur is not None else None

    def _now(self) -> str:
        return _iso(self.clock())


def _replace(j: Journal, **kw) -> Journal:
    return dataclasses.replace(j, **kw)
