"""Is a wave healthy? Install health from the devices' outcomes; model health by comparing
the devices on the new release with the control cohort (the targets still on the previous
release) on the telemetry they already send (``telemetry/metrics`` windows, restarts, the
retained ``telemetry/drift`` state).

Model health is a **sequential test** with a minimum exposure, so a small wave is not
judged on noise and looking every tick does not inflate false alarms:

- nothing is judged before both cohorts have ``min_requests`` requests and ``min_windows``
  metrics windows, and the new release ``min_device_s`` device-seconds;
- each metric is a one-sided z statistic for "the new release is worse than the control by
  more than the allowed margin": error rate (difference of proportions, margin
  ``max_error_rate_delta``), p95 latency (Welch on the log of the windows' p95, margin
  ``log(max_p95_ratio)``), agent restarts per device-hour (difference of Poisson rates,
  margin ``max_crash_per_h_delta``); when the plan sets ``max_drift_alarm_share_delta`` (< 1),
  the share of devices with an active drift alarm (their retained ``telemetry/drift`` state,
  one per device, for the release it serves now: a difference of proportions of devices with
  the Agresti-Caffo adjustment, one success and one failure added to each cohort, so a small
  cohort where every device or none alarms still has a standard error);
- drift adds to the minimum exposure: ``min_drift_devices`` devices of each cohort with a drift
  report since the epoch;
- Haybittle-Peto boundaries: during the bake (interim looks, any number of them) a breach
  needs z > 3.09 (one-sided p < 0.001); at the end of the bake (the final look) z > 1.645
  (p < 0.05). The overall false-alarm rate stays close to 5% per wave.

Pure: values in, values out (:class:`CohortStats`, :func:`model_verdict`, :func:`install_verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .plan import Criteria

Z_INTERIM = 3.09
Z_FINAL = 1.645


@dataclass
class CohortStats:
    """Sums over the metrics windows (and restarts) of one cohort."""

    requests: int = 0
    errors: int = 0
    device_s: float = 0.0
    windows: int = 0             # windows with a p95
    log_p95_sum: float = 0.0
    log_p95_sq: float = 0.0
    restarts: int = 0
    drift_devices: int = 0       # devices whose latest drift report (since the epoch) is for this release
    drift_alarmed: int = 0       # ... of which with an active drift alarm
    drift_psi_max_sum: float = 0.0  # sum over those devices of their report's largest PSI

    def add_drift(self, *, alarmed: bool, psi_max: float, sign: int = 1) -> None:
        """Count (``sign`` 1) or uncount (-1) one device's latest drift report."""
        self.drift_devices += sign
        self.drift_alarmed += sign * int(alarmed)
        self.drift_psi_max_sum += sign * psi_max

    def add_window(self, *, requests: int, errors: int, window_s: float, p95_ms: float | None) -> None:
        self.requests += requests
        self.errors += errors
        self.device_s += window_s
        if p95_ms is not None and p95_ms > 0:
            x = math.log(p95_ms)
            self.windows += 1
            self.log_p95_sum += x
            self.log_p95_sq += x * x

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def log_p95(self) -> tuple[float, float] | None:
        """(mean, variance) of log p95 over the windows, or None with fewer than 2."""
        n = self.windows
        if n < 2:
            return None
        mean = self.log_p95_sum / n
        return mean, max(0.0, (self.log_p95_sq - n * mean * mean) / (n - 1))

    def to_json(self) -> dict:
        lp = self.log_p95()
        return {"requests": self.requests, "errors": self.errors, "device_s": round(self.device_s, 1),
                "windows": self.windows, "restarts": self.restarts,
                "error_rate": None if self.error_rate is None else round(self.error_rate, 5),
                "p95_ms": None if lp is None else round(math.exp(lp[0]), 3),
                "drift_devices": self.drift_devices, "drift_alarmed": self.drift_alarmed}


@dataclass
class Verdict:
    state: str                      # "ok", "breach", "collecting"
    reasons: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    breached: list[str] = field(default_factory=list)   # the criteria breached: error_rate, p95, restarts, drift

    def to_json(self) -> dict:
        return {"state": self.state, "reasons": list(self.reasons), "values": dict(self.values),
                "breached": list(self.breached)}


def _z(diff: float, margin: float, se: float) -> float:
    if se <= 0:
        return math.inf if diff > margin else -math.inf
    return (diff - margin) / se


def model_verdict(new: CohortStats, control: CohortStats, c: Criteria, *, final: bool) -> Verdict:
    """Model health of the new release against the control cohort (see the module doc)."""
    values = {"new": new.to_json(), "control": control.to_json()}
    short = []
    if new.requests < c.min_requests or control.requests < c.min_requests:
        short.append(f"requests {new.requests}/{control.requests} < {c.min_requests}")
    if new.device_s < c.min_device_s:
        short.append(f"{new.device_s:.0f} device-s on the new release < {c.min_device_s:.0f}")
    if new.windows < c.min_windows or control.windows < c.min_windows:
        short.append(f"windows {new.windows}/{control.windows} < {c.min_windows}")
    if c.judges_drift and min(new.drift_devices, control.drift_devices) < c.min_drift_devices:
        short.append(f"devices with a drift report {new.drift_devices}/{control.drift_devices} < {c.min_drift_devices}")
    if short:
        return Verdict("collecting", ["not enough data yet: " + "; ".join(short)], values)
    bound = Z_FINAL if final else Z_INTERIM
    reasons, breached = [], []
    p1, p0 = new.errors / new.requests, control.errors / control.requests
    se = math.sqrt(p1 * (1 - p1) / new.requests + p0 * (1 - p0) / control.requests)
    z_err = _z(p1 - p0, c.max_error_rate_delta, se)
    values["error_rate"] = {"new": round(p1, 5), "control": round(p0, 5), "delta": round(p1 - p0, 5),
                            "max_delta": c.max_error_rate_delta, "z": _round(z_err)}
    if z_err > bound:
        breached.append("error_rate")
        reasons.append(f"error rate {p1:.2%} vs control {p0:.2%} (+{p1 - p0:.2%} > +{c.max_error_rate_delta:.2%}, "
                       f"z={z_err:.1f})")
    (m1, v1), (m0, v0) = new.log_p95(), control.log_p95()
    se = math.sqrt(v1 / new.windows + v0 / control.windows)
    z_p95 = _z(m1 - m0, math.log(c.max_p95_ratio), se)
    ratio = math.exp(m1 - m0)
    values["p95"] = {"new_ms": round(math.exp(m1), 3), "control_ms": round(math.exp(m0), 3),
                     "ratio": round(ratio, 3), "max_ratio": c.max_p95_ratio, "z": _round(z_p95)}
    if z_p95 > bound:
        breached.append("p95")
        reasons.append(f"p95 latency x{ratio:.2f} of control ({math.exp(m1):.1f} vs {math.exp(m0):.1f} ms, "
                       f"> x{c.max_p95_ratio:.2f}, z={z_p95:.1f})")
    h1, h0 = new.device_s / 3600.0, control.device_s / 3600.0
    r1, r0 = new.restarts / h1, (control.restarts / h0 if h0 > 0 else 0.0)
    se = math.sqrt((new.restarts + 0.5) / h1 ** 2 + ((control.restarts + 0.5) / h0 ** 2 if h0 > 0 else 0.0))
    z_crash = _z(r1 - r0, c.max_crash_per_h_delta, se)
    values["restarts_per_h"] = {"new": round(r1, 3), "control": round(r0, 3), "max_delta": c.max_crash_per_h_delta,
                                "z": _round(z_crash)}
    if z_crash > bound:
        breached.append("restarts")
        reasons.append(f"{r1:.1f} restarts per device-hour vs control {r0:.1f} (z={z_crash:.1f})")
    if c.judges_drift:
        reason = _drift(new, control, c, bound, values)
        if reason:
            breached.append("drift")
            reasons.append(reason)
    return Verdict("breach" if reasons else "ok", reasons, values, breached)


def _drift(new: CohortStats, control: CohortStats, c: Criteria, bound: float, values: dict) -> str | None:
    """The drift-alarm share of the new release against the control's (Agresti-Caffo); the
    breach reason, or None. Fills ``values["drift"]``."""
    n1, n0, a1, a0 = new.drift_devices, control.drift_devices, new.drift_alarmed, control.drift_alarmed
    q1, q0 = (a1 + 1) / (n1 + 2), (a0 + 1) / (n0 + 2)
    se = math.sqrt(q1 * (1 - q1) / (n1 + 2) + q0 * (1 - q0) / (n0 + 2))
    z = _z(q1 - q0, c.max_drift_alarm_share_delta, se)
    s1, s0 = a1 / n1, a0 / n0
    values["drift"] = {"new": round(s1, 4), "control": round(s0, 4), "delta": round(s1 - s0, 4),
                       "max_delta": c.max_drift_alarm_share_delta, "z": _round(z),
                       "psi_max_mean": {"new": round(new.drift_psi_max_sum / n1, 4),
                                        "control": round(control.drift_psi_max_sum / n0, 4)}}
    if z <= bound:
        return None
    return (f"drift alarms on {a1}/{n1} devices of the new release vs {a0}/{n0} of the control "
            f"({s1:.0%} vs {s0:.0%}, +{s1 - s0:.0%} > +{c.max_drift_alarm_share_delta:.0%}, z={z:.1f}; mean max PSI "
            f"{values['drift']['psi_max_mean']['new']:.2f} vs {values['drift']['psi_max_mean']['control']:.2f})")


def _round(z: float) -> float | None:
    return None if math.isinf(z) else round(z, 2)


def install_verdict(*, size: int, committed: int, failed: int, failed_since_ack: int, results_since_ack: int,
                    c: Criteria, settled: bool) -> Verdict:
    """Install health of one wave: too many failures among the results (with a minimum
    sample; counted since the last resume), or too few commits once every device answered."""
    values = {"size": size, "committed": committed, "failed": failed,
              "failure_pct": round(100.0 * failed / (committed + failed), 1) if committed + failed else None,
              "success_pct": round(100.0 * committed / size, 1) if size else None}
    if results_since_ack >= c.min_sample and 100.0 * failed_since_ack / results_since_ack >= c.max_failure_pct:
        return Verdict("breach", [f"install failures {failed_since_ack}/{results_since_ack} "
                                  f"({100.0 * failed_since_ack / results_since_ack:.0f}% >= {c.max_failure_pct:g}%)"],
                       values)
    if settled and size and 100.0 * committed / size < c.min_success_pct:
        return Verdict("breach", [f"only {committed}/{size} committed ({100.0 * committed / size:.0f}% < "
                                  f"{c.min_success_pct:g}%)"], values)
    return Verdict("ok" if settled else "collecting", [], values)
