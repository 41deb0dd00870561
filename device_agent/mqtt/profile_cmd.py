"""The ``profile`` command (``cmd/profile``): answer at once, measure in the background, send
the result back in chunks on ``telemetry/profile/{profile_id}`` through the durable queue.

The answer is ``ok`` with the profile id when the job starts, or a refusal naming why
(``busy.updating``, ``busy.profiling``, ``profile.model_not_found``, ``profile.memory_short``,
``profile.bad_request``). One profile runs at a time. The measuring itself is
:mod:`device_agent.profiling`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from runtime.contracts.mqtt.messages import Kind
from runtime.contracts.mqtt.telemetry import profile_chunks

from ..profiling import Job, ProfileRefused, mem_available_bytes, plan, run

log = logging.getLogger("edgeship.telemetry")


class ProfileRunner:
    """Runs at most one profile job; ``publish(kind, body, id)`` queues one chunk."""

    def __init__(self, agent: Any, updater: Any, publish: Callable[[Kind, dict, str], None]) -> None:
        self.agent, self.updater, self.publish = agent, updater, publish
        self._lock = threading.Lock()
        self._running: Job | None = None
        self.finished = threading.Event()

    def busy(self, running_deployment: Any) -> str | None:
        if running_deployment is not None:
            return f"update deployment {running_deployment.deployment_id} is running"
        if self.updater is not None and not self.updater.wait_idle(0.0):
            return "an update is running"
        with self._lock:
            if self._running is not None:
                return f"profile {self._running.profile_id} is running"
        return None

    def handle(self, host: Any, body: dict) -> tuple[bool, str | None, str, dict]:
        try:
            job = plan(self.agent.store, body, busy=self.busy(host.running_deployment()),
                       available_bytes=mem_available_bytes())
        except ProfileRefused as e:
            return False, e.reason_code, e.detail, {}
        with self._lock:
            if self._running is not None:
                return False, "busy.profiling", f"profile {self._running.profile_id} is running", {}
            self._running = job
            self.finished.clear()
        threading.Thread(target=self._run, args=(job,), name="edgeship-profile", daemon=True).start()
        return True, None, (f"profiling {job.ref['name']} r{job.ref['release']} at threads "
                            f"{list(job.threads)}; serving goes on"), {
            "profile_id": job.profile_id, "model": job.ref, "cells": len(job.threads)}

    def _run(self, job: Job) -> None:
        try:
            result = run(job, requests_served=lambda: self.agent.metrics.snapshot().requests_total)
        except Exception as e:  # the asker still gets an answer: a result whose cells say what failed
            log.exception("profile %s failed", job.profile_id)
            result = {"kind": "edgeship-device-profile", "version": 1, "profile_id": job.profile_id,
                      "model": job.ref, "error": f"{type(e).__name__}: {e}", "cells": []}
        try:
            for chunk in profile_chunks(job.profile_id, result):
                self.publish(Kind.PROFILE_CHUNK, chunk, job.profile_id)
        except Exception:
            log.exception("profile %s: result not queued", job.profile_id)
        finally:
            with self._lock:
                self._running = None
            self.finished.set()
