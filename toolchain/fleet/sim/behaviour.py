"""How simulated devices behave: typed, frozen, from flags or a TOML file; decisions per
device are deterministic (a hash of seed, device and question), so a run can be repeated.

```toml
seed = 7
requests_per_s = 20.0      # inference requests a device serves per second
base_p95_ms = 9.0          # p50 = p95 / 1.8, p99 = p95 * 1.4
base_error_rate = 0.002
metrics_interval_s = 2.0
install_s = 0.6            # accepted -> commit (the update states are spread over it)
offline_share = 0.0        # devices offline from the start
churn_per_min = 0.0        # share of the online devices that leave per minute (each returns after away_s)
away_s = 10.0
drift_baseline = false     # the bundles carry a drift baseline: devices publish telemetry/drift every window
groups = { sim = 1.0, canary = 0.1 }       # share of devices in each group
arch = { x86_64 = 0.5, aarch64 = 0.5 }     # share of devices per architecture

[release.3]                # behaviour on release 3 of the model
gate_fail_share = 0.0      # its gate refuses it (failed, gate.tolerance)
trial_fail_share = 0.0     # its trial rolls it back (rolled_back, trial.error_rate)
latency_factor = 1.0       # latencies times this
error_rate = 0.002         # error rate on this release (default: base_error_rate)
crash_per_h = 0.0          # agent restarts per hour on this release
drift_share = 0.0          # share of devices whose inputs drift on this release (PSI ~0.6; their
                           # drift alarm raises after DRIFT_SUSTAIN windows; needs drift_baseline)
```
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ...errors import BadInputError


@dataclass(frozen=True)
class ReleaseBehaviour:
    gate_fail_share: float = 0.0
    trial_fail_share: float = 0.0
    latency_factor: float = 1.0
    error_rate: float | None = None
    crash_per_h: float = 0.0
    drift_share: float = 0.0


@dataclass(frozen=True)
class SimBehaviour:
    seed: int = 0
    requests_per_s: float = 20.0
    base_p95_ms: float = 9.0
    base_error_rate: float = 0.002
    metrics_interval_s: float = 2.0
    heartbeat_s: float = 30.0
    install_s: float = 0.6
    offline_share: float = 0.0
    churn_per_min: float = 0.0
    away_s: float = 10.0
    drift_baseline: bool = False
    groups: Mapping[str, float] = field(default_factory=lambda: {"sim": 1.0})
    arch: Mapping[str, float] = field(default_factory=lambda: {"x86_64": 1.0})
    release: Mapping[int, ReleaseBehaviour] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shares = {"offline_share": self.offline_share, **{f"groups.{k}": v for k, v in self.groups.items()},
                  **{f"arch.{k}": v for k, v in self.arch.items()}}
        for r, rb in self.release.items():
            shares.update({f"release.{r}.gate_fail_share": rb.gate_fail_share,
                           f"release.{r}.trial_fail_share": rb.trial_fail_share,
                           f"release.{r}.drift_share": rb.drift_share})
            if rb.error_rate is not None:
                shares[f"release.{r}.error_rate"] = rb.error_rate
            if rb.latency_factor <= 0 or rb.crash_per_h < 0:
                raise BadInputError(f"simulator release.{r}: latency_factor must be > 0, crash_per_h >= 0")
        for k, v in shares.items():
            if not 0.0 <= v <= 1.0:
                raise BadInputError(f"simulator {k} = {v}: a share must be between 0 and 1")
        for k in ("requests_per_s", "base_p95_ms", "metrics_interval_s", "heartbeat_s", "install_s", "away_s"):
            if getattr(self, k) <= 0:
                raise BadInputError(f"simulator {k} must be > 0, got {getattr(self, k)}")
        if not 0 <= self.churn_per_min <= 1 or not 0 <= self.base_error_rate <= 1:
            raise BadInputError("simulator churn_per_min and base_error_rate must be between 0 and 1")

    # ------------------------------------------------------------ per-device decisions
    def u(self, device: str, question: str) -> float:
        """A uniform number in [0, 1) fixed by (seed, device, question)."""
        h = hashlib.sha256(f"{self.seed}/{device}/{question}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    def of(self, release: int) -> ReleaseBehaviour:
        return self.release.get(release, ReleaseBehaviour())

    def gate_fails(self, device: str, release: int) -> bool:
        return self.u(device, f"gate/{release}") < self.of(release).gate_fail_share

    def trial_fails(self, device: str, release: int) -> bool:
        return self.u(device, f"trial/{release}") < self.of(release).trial_fail_share

    def drifts(self, device: str, release: int) -> bool:
        """Whether the device's inputs drift while it serves ``release``."""
        return self.u(device, f"drift/{release}") < self.of(release).drift_share

    def starts_offline(self, device: str) -> bool:
        return self.u(device, "offline") < self.offline_share

    def groups_of(self, device: str) -> tuple[str, ...]:
        return tuple(g for g, share in sorted(self.groups.items()) if self.u(device, f"group/{g}") < share)

    def arch_of(self, device: str) -> str:
        x, acc = self.u(device, "arch"), 0.0
        total = sum(self.arch.values()) or 1.0
        for a, share in sorted(self.arch.items()):
            acc += share / total
            if x < acc:
                return a
        return sorted(self.arch)[-1]

    def error_rate(self, release: int) -> float:
        rb = self.of(release)
        return self.base_error_rate if rb.error_rate is None else rb.error_rate

    def p95_ms(self, release: int) -> float:
        return self.base_p95_ms * self.of(release).latency_factor

    def crash_probability(self, release: int, window_s: float) -> float:
        return 1.0 - math.exp(-self.of(release).crash_per_h * window_s / 3600.0)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_toml(cls, path: str | Path) -> "SimBehaviour":
        """Raises BadInputError: unreadable, invalid TOML, unknown keys, values out of range."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise BadInputError(f"{path}: cannot read the simulator behaviour: {e}") from e
        return cls.from_mapping(data, where=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "behaviour") -> "SimBehaviour":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        kw = dict(data)
        rel = {}
        for r, rb in (kw.pop("release", None) or {}).items():
            rknown = {f.name for f in fields(ReleaseBehaviour)}
            if not str(r).isdigit() or not isinstance(rb, Mapping) or set(rb) - rknown:
                raise BadInputError(f"{where}: [release.{r}] must be a release number with keys {sorted(rknown)}")
            rel[int(r)] = ReleaseBehaviour(**rb)
        try:
            return cls(**kw, release=rel)
        except TypeError as e:
            raise BadInputError(f"{where}: {e}") from e

    def with_release(self, release: int, **kw: Any) -> "SimBehaviour":
        return replace(self, release={**self.release, release: replace(self.of(release), **kw)})
