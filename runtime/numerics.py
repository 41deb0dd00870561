"""Numeric rules shared by the compile gate and the device's golden gate.

One definition of "exact": an output whose max-abs error is within :data:`EXACT_REL_TOL`
of the reference's range is exact, whatever its cosine. Cosine is noise on a near-constant
or near-zero output (a text detector's empty probability map): two fp32 engines that agree
to 4e-7 can have a cosine far under 0.99 there.
"""

from __future__ import annotations

import numpy as np

EXACT_REL_TOL = 1e-3


def output_range(ref: np.ndarray) -> float:
    """max - min of the reference over all values; its max magnitude (or 1) if constant."""
    r = np.asarray(ref, dtype=np.float64)
    if not r.size:
        return 1.0
    span = float(r.max() - r.min())
    return span if span > 0 else (float(np.abs(r).max()) or 1.0)


def is_exact(max_abs_error: float, ref: np.ndarray) -> bool:
    """True when ``max_abs_error`` is within :data:`EXACT_REL_TOL` of ``ref``'s range."""
    return max_abs_error <= EXACT_REL_TOL * output_range(ref)
