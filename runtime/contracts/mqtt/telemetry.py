"""Device telemetry the operator side reads: drift reports, profile-result chunks, and strict
parsers of ``metrics``, ``status`` and ``drift`` documents (for ``edgeship fleet exporter``
and ``edgeship fleet drift``).

Builders produce message bodies (the envelope is added by ``payloads.envelope``); parsers
raise :class:`PayloadRejected` (``payload.not_json``, ``payload.schema``) so a consumer can
count a malformed message and skip it. Unknown fields are ignored.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import PayloadRejected
from .messages import Kind

#: raw bytes of result data per profile chunk (base64 makes it ~4/3 of this on the wire)
PROFILE_CHUNK_BYTES = 48 * 1024
#: the most chunks a result may have (bounds what a receiver keeps for one profile)
MAX_PROFILE_CHUNKS = 256


# ---------------------------------------------------------------- builders
def drift_report(report: Mapping[str, Any]) -> dict:
    """The ``telemetry/drift`` body: a :class:`DriftReport` of the device as JSON (see docs/mqtt.md)."""
    return {"model": dict(report.get("model") or {}), "checks": int(report.get("checks", 0)),
            "window_samples": int(report.get("window_samples", 0)), "scores": list(report.get("scores") or []),
            "alarms": list(report.get("alarms") or []), "thresholds": dict(report.get("thresholds") or {}),
            "skipped_requests": int(report.get("skipped_requests", 0)),
            "schedule": dict(report.get("schedule") or {})}


def profile_chunks(profile_id: str, result: Mapping[str, Any], *,
                   chunk_bytes: int = PROFILE_CHUNK_BYTES) -> list[dict]:
    """A profile result split into ``telemetry/profile/{id}`` bodies: gzip'd JSON, base64 slices,
    each naming its index, the count and the sha256 of the whole so the receiver can verify it.

    Raises:
        ValueError: the result needs more than MAX_PROFILE_CHUNKS chunks.
    """
    raw = gzip.compress(json.dumps(result, separators=(",", ":")).encode(), mtime=0)
    digest = hashlib.sha256(raw).hexdigest()
    parts = [raw[i:i + chunk_bytes] for i in range(0, len(raw), chunk_bytes)] or [b""]
    if len(parts) > MAX_PROFILE_CHUNKS:
        raise ValueError(f"profile result of {len(raw)} bytes needs {len(parts)} chunks (max {MAX_PROFILE_CHUNKS})")
    return [{"profile_id": profile_id, "index": i, "count": len(parts), "bytes": len(raw), "sha256": digest,
             "data": base64.b64encode(p).decode()} for i, p in enumerate(parts)]


class ProfileAssembly:
    """Collects the chunks of one profile result and verifies it is complete and intact."""

    def __init__(self, profile_id: str) -> None:
        self.profile_id = profile_id
        self._parts: dict[int, bytes] = {}
        self._count: int | None = None
        self._sha: str | None = None

    def add(self, doc: Mapping[str, Any]) -> bool:
        """Add one chunk body; True when every chunk is in. Raises PayloadRejected on a bad chunk."""
        if doc.get("profile_id") != self.profile_id:
            return False
        idx, count = _int(doc, "index", "profile chunk"), _int(doc, "count", "profile chunk")
        sha = doc.get("sha256")
        if not (0 <= idx < count <= MAX_PROFILE_CHUNKS) or not isinstance(sha, str):
            raise PayloadRejected("payload.schema", f"profile chunk {idx}/{count}: bad index, count or sha256")
        if self._count not in (None, count) or self._sha not in (None, sha):
            raise PayloadRejected("payload.schema", "profile chunks disagree on their count or sha256")
        self._count, self._sha = count, sha
        try:
            self._parts[idx] = base64.b64decode(str(doc.get("data", "")), validate=True)
        except ValueError as e:
            raise PayloadRejected("payload.schema", f"profile chunk {idx}: data is not base64: {e}") from e
        return len(self._parts) == self._count

    @property
    def missing(self) -> list[int]:
        return [] if self._count is None else [i for i in range(self._count) if i not in self._parts]

    def result(self) -> dict:
        """The verified result. Raises PayloadRejected when chunks are missing or the hash differs."""
        if self._count is None or self.missing:
            raise PayloadRejected("profile.incomplete", f"profile {self.profile_id}: chunks {self.missing} missing")
        raw = b"".join(self._parts[i] for i in range(self._count))
        if hashlib.sha256(raw).hexdigest() != self._sha:
            raise PayloadRejected("profile.corrupt", f"profile {self.profile_id}: sha256 of the chunks differs")
        return json.loads(gzip.decompress(raw))


# ---------------------------------------------------------------- parsers
def load(raw: bytes, kind: Kind) -> dict[str, Any]:
    """A device document of ``kind`` (schema checked). Raises PayloadRejected."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PayloadRejected("payload.not_json", f"{kind.value}: not UTF-8 JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("schema") != kind.schema:
        raise PayloadRejected("payload.schema", f"{kind.value}: not an object with schema {kind.schema!r}")
    return doc


@dataclass(frozen=True)
class MetricsReading:
    """What the fleet exporter keeps of one ``telemetry/metrics`` window."""

    window_s: float
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    model: str | None
    release: int | None
    version: str | None
    rss_bytes: float | None
    cpu_percent: float | None
    temperature_c: float | None
    queue_depth: int | None


def parse_metrics(raw: bytes) -> MetricsReading:
    """Parse a ``telemetry/metrics`` document. Raises PayloadRejected on a malformed one."""
    d = load(raw, Kind.METRICS)
    lat = d.get("latency_ms")
    if not isinstance(lat, dict):
        raise PayloadRejected("payload.schema", "metrics: latency_ms must be an object")
    active = d.get("active_model") if isinstance(d.get("active_model"), dict) else {}
    queue = d.get("queue") if isinstance(d.get("queue"), dict) else {}
    window = _num(d, "window_s", "metrics")
    if window <= 0:
        raise PayloadRejected("payload.schema", "metrics: window_s must be > 0")
    requests, errors = _int(d, "requests", "metrics"), _int(d, "errors", "metrics")
    if requests < 0 or not 0 <= errors <= requests:
        raise PayloadRejected("payload.schema", f"metrics: requests {requests} / errors {errors} inconsistent")
    return MetricsReading(
        window_s=window, requests=requests, errors=errors,
        p50_ms=_opt_num(lat, "p50"), p95_ms=_opt_num(lat, "p95"), p99_ms=_opt_num(lat, "p99"),
        model=_opt_str(active, "name"), release=active.get("release") if isinstance(active.get("release"), int) else None,
        version=_opt_str(active, "version"), rss_bytes=_opt_num(d, "rss_bytes"),
        cpu_percent=_opt_num(d, "cpu_percent"), temperature_c=_opt_num(d, "temperature_c"),
        queue_depth=queue.get("depth") if isinstance(queue.get("depth"), int) else None)


def parse_status(raw: bytes) -> dict[str, Any]:
    """Parse a ``status`` document: ``online`` must be a bool. Raises PayloadRejected."""
    d = load(raw, Kind.STATUS)
    if not isinstance(d.get("online"), bool):
        raise PayloadRejected("payload.schema", "status: online must be true or false")
    return d


def parse_drift(raw: bytes) -> dict[str, Any]:
    """Parse a ``telemetry/drift`` document: an integer ``ts_ms`` (the envelope's), a ``model``
    object, every score with a name, a kind and a finite psi, ``alarms`` a list."""
    d = load(raw, Kind.DRIFT)
    _int(d, "ts_ms", "drift")
    scores = d.get("scores")
    if not isinstance(scores, list) or not isinstance(d.get("model"), dict):
        raise PayloadRejected("payload.schema", "drift: scores must be a list and model an object")
    for s in scores:
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("kind"), str)):
            raise PayloadRejected("payload.schema", "drift: every score needs a name and a kind")
        _num(s, "psi", "drift score")
    if not isinstance(d.get("alarms", []), list):
        raise PayloadRejected("payload.schema", "drift: alarms must be a list")
    return d


def _num(d: Mapping[str, Any], key: str, what: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise PayloadRejected("payload.schema", f"{what}: {key!r} must be a finite number, got {v!r}")
    return float(v)


def _int(d: Mapping[str, Any], key: str, what: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PayloadRejected("payload.schema", f"{what}: {key!r} must be an integer, got {v!r}")
    return v


def _opt_num(d: Mapping[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None
