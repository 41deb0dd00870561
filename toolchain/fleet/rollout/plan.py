"""A rollout plan: release, target, ordered waves, per-wave criteria. Typed, frozen, strict.

From a TOML file (``edgeship rollout start PLAN.toml``) and/or flags (flags win)::

    id = "tiny-r3"            # optional: default <model>-r<release>-<utc time>
    fleet = "plant-a"
    model = "tiny"
    release = 3
    concurrency = 50          # devices updating at once, at most

    [target]                  # exactly one of:
    group = "line-1"          #   every device whose status lists the group
    # devices = ["cam-1", "cam-2"]
    # select = { arch = "aarch64", engine = "onnxruntime" }   # on reported properties

    [criteria]                # defaults of every wave (docs/fleet.md lists them)
    bake_s = 600
    max_failure_pct = 10

    [[wave]]
    size = 1                  # a count, "N%" of the targets, or "rest"
    bake_s = 60               # any criteria key, for this wave only
    [[wave]]
    size = "10%"
    [[wave]]
    size = "rest"

Every value is checked here, before anything is published (:class:`~...errors.BadInputError`
naming the key): a wave of 0, a percentage outside (0, 100], thresholds out of range,
an unknown key, an unknown action.
"""

from __future__ import annotations

import enum
import re
import time
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from runtime.contracts.mqtt.topics import check_level

from ...errors import BadInputError


class Action(str, enum.Enum):
    """What a breach does."""

    PAUSE = "pause"        # stop assigning; wait for `edgeship rollout resume`
    ABORT = "abort"        # stop assigning for good; devices already moved stay
    ROLLBACK = "rollback"  # abort, and move the devices already moved back (operator-signed)


@dataclass(frozen=True)
class Criteria:
    """When a wave advances, and what counts as a breach (units in the names)."""

    bake_s: float = 600.0               # after every device of the wave has a result
    max_bake_s: float = 0.0             # model health still short of data at bake end: keep baking up to this (0: 4 x bake_s), then pause
    install_timeout_s: float = 900.0    # no result this long after its assignment: a failure (offline devices too)
    min_success_pct: float = 95.0       # S: at the end of the bake, at least S% of the wave committed
    max_failure_pct: float = 10.0       # F: failures reach F% of the results so far ...
    min_sample: int = 3                 # ... once at least this many devices have a result
    on_install_failure: Action = Action.PAUSE
    max_error_rate_delta: float = 0.01  # error rate of the new release minus the control cohort's
    max_p95_ratio: float = 1.3          # p95 latency of the new release / the control cohort's
    max_crash_per_h_delta: float = 1.0  # agent restarts per device-hour, new minus control
    min_requests: int = 1000            # requests of each cohort before model health is judged ...
    min_device_s: float = 600.0         # ... and device-seconds on the new release ...
    min_windows: int = 5                # ... and metrics windows of each cohort (for p95)
    max_drift_alarm_share_delta: float = 1.0  # share of devices with a drift alarm, new minus control (1: off)
    min_drift_devices: int = 3          # drift judged only when each cohort has this many devices with a drift report
    on_model_regression: Action = Action.PAUSE

    def __post_init__(self) -> None:
        pct = ("min_success_pct", "max_failure_pct")
        for k in pct:
            if not 0.0 <= getattr(self, k) <= 100.0:
                raise BadInputError(f"criteria {k} = {getattr(self, k)}: a percentage must be between 0 and 100")
        if not 0.0 <= self.max_error_rate_delta <= 1.0:
            raise BadInputError(f"criteria max_error_rate_delta = {self.max_error_rate_delta}: must be in [0, 1]")
        if not 0.0 <= self.max_drift_alarm_share_delta <= 1.0:
            raise BadInputError(f"criteria max_drift_alarm_share_delta = {self.max_drift_alarm_share_delta}: must be "
                                "in [0, 1] (a share of devices; 1 turns the drift criterion off)")
        if self.max_p95_ratio < 1.0:
            raise BadInputError(f"criteria max_p95_ratio = {self.max_p95_ratio}: must be >= 1 (1.3 = 30% slower)")
        for k in ("bake_s", "max_bake_s", "min_device_s", "max_crash_per_h_delta"):
            if getattr(self, k) < 0:
                raise BadInputError(f"criteria {k} must be >= 0, got {getattr(self, k)}")
        for k in ("install_timeout_s",):
            if getattr(self, k) <= 0:
                raise BadInputError(f"criteria {k} must be > 0, got {getattr(self, k)}")
        for k in ("min_sample", "min_requests", "min_windows", "min_drift_devices"):
            if getattr(self, k) < 1:
                raise BadInputError(f"criteria {k} must be >= 1, got {getattr(self, k)}")

    @property
    def judges_drift(self) -> bool:
        """Drift is a criterion (``max_drift_alarm_share_delta`` < 1; off by default: devices
        publish drift only for bundles that carry a drift baseline)."""
        return self.max_drift_alarm_share_delta < 1.0

    @property
    def bake_limit_s(self) -> float:
        return self.max_bake_s if self.max_bake_s > 0 else 4 * self.bake_s

    def to_json(self) -> dict[str, Any]:
        return {f.name: (v.value if isinstance(v := getattr(self, f.name), enum.Enum) else v) for f in fields(self)}


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class WaveSpec:
    size: str                          # "5", "10%", "rest"
    criteria: Criteria

    def count(self, total: int, taken: int) -> int:
        """How many devices this wave takes of ``total`` when ``taken`` are in earlier waves."""
        if self.size == "rest":
            return total - taken
        m = _SIZE.match(self.size)
        n = -(-int(float(m.group(1)) * total) // 100) if m else int(self.size)
        return min(n, total - taken)


@dataclass(frozen=True)
class Target:
    group: str | None = None
    devices: tuple[str, ...] = ()
    select: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.group:
            return f"group {self.group!r}"
        if self.devices:
            return f"devices {list(self.devices)}"
        return "select " + ", ".join(f"{k}={v}" for k, v in sorted(self.select.items()))

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "devices": list(self.devices), "select": dict(self.select)}


@dataclass(frozen=True)
class RolloutPlan:
    id: str
    fleet: str
    model: str
    release: int
    target: Target
    waves: tuple[WaveSpec, ...]
    concurrency: int = 50

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "fleet": self.fleet, "model": self.model, "release": self.release,
                "concurrency": self.concurrency, "target": self.target.to_json(),
                "waves": [{"size": w.size, **w.criteria.to_json()} for w in self.waves]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RolloutPlan":
        """The plan a journal holds (written by :meth:`to_json`)."""
        top = {k: d[k] for k in ("id", "fleet", "model", "release", "concurrency")}
        return build({**top, "target": d["target"], "wave": [dict(w) for w in d["waves"]]}, {}, where="journal")


_TOP = {"id", "fleet", "model", "release", "concurrency", "target", "criteria", "wave"}
_CRITERIA = {f.name for f in fields(Criteria)}


def _criteria(base: Criteria, over: Mapping[str, Any], where: str) -> Criteria:
    unknown = sorted(set(over) - _CRITERIA)
    if unknown:
        raise BadInputError(f"{where}: unknown criteria key(s) {unknown}; known: {sorted(_CRITERIA)}")
    kw = dict(over)
    for k in ("on_install_failure", "on_model_regression"):
        if k in kw:
            try:
                kw[k] = Action(kw[k])
            except ValueError:
                raise BadInputError(f"{where}: {k} = {kw[k]!r}; choose one of {[a.value for a in Action]}") from None
    try:
        return replace(base, **kw)
    except TypeError as e:
        raise BadInputError(f"{where}: {e}") from e


def _size(v: Any, where: str) -> str:
    s = str(v).strip()
    if s == "rest":
        return s
    m = _SIZE.match(s)
    if m:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise BadInputError(f"{where}: wave size {s!r}: a percentage must be in (0, 100]")
        return s
    if not s.isdigit() or int(s) < 1:
        raise BadInputError(f"{where}: wave size {v!r}: a wave needs at least 1 device (a count >= 1, 'N%' or 'rest')")
    return s


def build(data: Mapping[str, Any], flags: Mapping[str, Any], *, where: str) -> RolloutPlan:
    """A plan from a parsed TOML table and flag values (flags win; None = not given).

    Raises:
        BadInputError: unknown keys, missing fields, values out of range.
    """
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {unknown}; known: {sorted(_TOP)}")
    top = {k: data.get(k) for k in ("id", "fleet", "model", "release", "concurrency")}
    top.update({k: v for k, v in flags.items() if k in top and v is not None})
    for k in ("fleet", "model", "release"):
        if top[k] in (None, ""):
            raise BadInputError(f"{where}: the rollout needs {k} (in the plan or --{k})")
    if not isinstance(top["release"], int) or top["release"] < 1:
        raise BadInputError(f"{where}: release must be an integer >= 1, got {top['release']!r}")
    rid = top["id"] or f"{top['model']}-r{top['release']}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        for kind, v in (("fleet", top["fleet"]), ("model", top["model"]), ("rollout id", rid)):
            check_level(kind, v)
    except ValueError as e:
        raise BadInputError(f"{where}: {e}") from e
    concurrency = top["concurrency"] if top["concurrency"] is not None else 50
    if not isinstance(concurrency, int) or concurrency < 1:
        raise BadInputError(f"{where}: concurrency must be an integer >= 1, got {concurrency!r}")
    base = _criteria(Criteria(), data.get("criteria") or {}, f"{where} [criteria]")
    base = _criteria(base, flags.get("criteria") or {}, "flags")
    specs = flags.get("waves") or data.get("wave") or [{"size": "100%"}]
    waves = []
    for i, w in enumerate(specs, 1):
        w = dict(w) if isinstance(w, Mapping) else {"size": w}
        if "size" not in w:
            raise BadInputError(f"{where}: wave {i} has no size")
        size = _size(w.pop("size"), f"{where} wave {i}")
        waves.append(WaveSpec(size, _criteria(base, w, f"{where} wave {i}")))
    return RolloutPlan(id=rid, fleet=top["fleet"], model=top["model"], release=top["release"],
                       target=_target(flags.get("target") or data.get("target") or {}, where),
                       waves=tuple(waves), concurrency=concurrency)


def _target(t: Mapping[str, Any], where: str) -> Target:
    unknown = sorted(set(t) - {"group", "devices", "select"})
    if unknown:
        raise BadInputError(f"{where}: [target] unknown key(s) {unknown}; use group, devices or select")
    given = [k for k in ("group", "devices", "select") if t.get(k)]
    if not given and any(k in t for k in ("devices", "select")):
        raise BadInputError(f"{where}: the target is empty (no device, no selector): the plan targets nobody")
    if len(given) != 1:
        raise BadInputError(f"{where}: the target needs exactly one of group, devices, select (got {given or 'none'})")
    devices = tuple(t.get("devices") or ())
    try:
        for d in devices:
            check_level("device", d)
        if t.get("group"):
            check_level("group", t["group"])
    except ValueError as e:
        raise BadInputError(f"{where}: {e}") from e
    return Target(group=t.get("group"), devices=devices, select={str(k): str(v) for k, v in (t.get("select") or {}).items()})


def load(path: str | Path | None, flags: Mapping[str, Any]) -> RolloutPlan:
    """The plan of ``path`` (may be None: flags only) with ``flags`` on top. Raises BadInputError."""
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise BadInputError(f"{path}: cannot read the rollout plan: {e}") from e
    return build(data, flags, where=str(path) if path else "flags")
