"""Golden-set numerics: split golden.npz into calls, and judge outputs against them.

Pure (arrays in, calls or problems out); the gate on the device and the tests use them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ...numerics import is_exact
from ..errors import BundleError
from .schema import GOLDEN_NPZ, BundleInfo, Tolerances


def golden_calls(arrays: Mapping[str, np.ndarray], info: BundleInfo) -> list[tuple[dict, dict]]:
    """Split golden.npz arrays into ``[(feeds, expected_outputs), ...]``, one per call.

    Raises:
        BundleError: an input or output of ``info`` has no array, or the call counts differ.
    """
    ins = {s.name: f"in:{s.name}" for s in info.inputs}
    outs = {s.name: f"out:{s.name}" for s in info.outputs}
    missing = [k for k in (*ins.values(), *outs.values()) if k not in arrays]
    if missing:
        raise BundleError(f"{GOLDEN_NPZ}: missing arrays {missing}")
    counts = {int(arrays[k].shape[0]) for k in (*ins.values(), *outs.values())}
    if counts != {info.golden_calls}:
        raise BundleError(f"{GOLDEN_NPZ}: leading axes {sorted(counts)} differ from "
                          f"golden_calls={info.golden_calls}")
    return [({n: arrays[k][i] for n, k in ins.items()}, {n: arrays[k][i] for n, k in outs.items()})
            for i in range(info.golden_calls)]


def compare_outputs(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    tol: Tolerances) -> list[str]:
    """Problems (empty when fine) between outputs and golden outputs under ``tol``:
    a missing output, a shape change, NaN/Inf, an element past atol, a cosine under min.

    Cosine is not judged on an exact answer (:func:`runtime.numerics.is_exact`): on a
    near-constant or near-zero output it is noise, and would refuse a correct device."""
    problems = []
    for name, exp in expected.items():
        if name not in got:
            problems.append(f"output {name!r} missing")
            continue
        g = np.asarray(got[name])
        if g.shape != exp.shape:
            problems.append(f"output {name!r} has shape {list(g.shape)}, golden {list(exp.shape)}")
            continue
        gf, ef = g.astype(np.float64).ravel(), np.asarray(exp, dtype=np.float64).ravel()
        if not np.all(np.isfinite(gf)):
            problems.append(f"output {name!r} holds NaN or Inf")
            continue
        err = float(np.max(np.abs(gf - ef))) if gf.size else 0.0
        if err > tol.atol:
            problems.append(f"output {name!r} max abs error {err:.3g} > atol {tol.atol:.3g}")
        if is_exact(err, ef):
            continue
        ng, ne = float(np.linalg.norm(gf)), float(np.linalg.norm(ef))
        cos = 1.0 if ng == 0 and ne == 0 else (float(gf @ ef) / (ng * ne) if ng and ne else 0.0)
        if cos < tol.min_cosine:
            problems.append(f"output {name!r} cosine {cos:.6f} < {tol.min_cosine}")
    return problems
