"""The second-size checks of a build (issue: a dynamic axis must be dynamic in every artifact).

1. :func:`choose_probe`: the first probe (:mod:`toolchain.compile.dynamic`) the reference
   takes: PyTorch for torch sources, ONNX Runtime on the file for ONNX sources. When none
   runs, each dim is tried alone and the ones that fail are named (a ``SpecializationError``).
2. :func:`check_reference_onnx`: for torch sources, the exported ONNX must give PyTorch's
   outputs at the probe sizes too; a dim it does not honour is named with the source line
   torch's guards point at.
3. :func:`follow_inputs`: output dims that change with the inputs are declared dynamic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from runtime.spec import TensorSpec, is_dynamic
from toolchain.compile import fidelity as fid
from toolchain.compile.dynamic import DimRef, GuardLog, Probe, SpecializationError, Specialized, probe_candidates
from toolchain.compile.samples import Arrays, Layout

RunRef = Callable[[Mapping[str, np.ndarray]], Arrays]


def choose_probe(label: str, run_reference: RunRef, stored: Arrays, inputs: Sequence[TensorSpec], layout: Layout, *,
                 engine_name: str) -> tuple[Probe, Arrays] | None:
    """``(probe, reference outputs at it)``, or None when the model has no dynamic dim.

    Raises:
        SpecializationError: the reference fails at every probe; names the dims that fail alone.
    """
    candidates = probe_candidates(stored, inputs, layout)
    if not candidates:
        return None
    errors = []
    for p in candidates:
        try:
            return p, run_reference(p.arrays)
        except Exception as e:  # the engine's error at that size: the report below names it
            errors.append(f"{p.describe()}: {_first_line(e)}")
    found = []
    for d in _keys(candidates[0].changed):
        alone = probe_candidates(stored, inputs, layout, only=[d.key])
        msgs = []
        for p in alone:
            try:
                run_reference(p.arrays)
                break
            except Exception as e:
                msgs.append(f"{d.key}={p.sizes[d.key]}: {_first_line(e)}")
        else:
            found.append(Specialized(dim=d, value=candidates[0].base[d.key],
                                     detail=f"{engine_name} fails at " + "; ".join(msgs) + _tie_hint(d, layout)))
    if not found:  # every dim works alone, not together: name them all
        found = [Specialized(dim=d, value=candidates[0].base[d.key], detail=f"{engine_name} fails at "
                             + "; ".join(errors)) for d in _keys(candidates[0].changed)]
    raise SpecializationError(label, found)


def check_reference_onnx(label: str, onnx_path: Path, probe: Probe, torch_out: Arrays, *, run_onnx: RunRef,
                         stored: Arrays, inputs: Sequence[TensorSpec], layout: Layout, run_torch: RunRef,
                         guards: GuardLog | None, arg_names: Sequence[str]) -> None:
    """The exported ONNX at the probe sizes against PyTorch at the same sizes.

    Raises:
        SpecializationError: it fails or differs there; names the dims that do so alone.
    """
    if _onnx_matches(run_onnx, probe.arrays, torch_out) is None:
        return
    found = []
    for d in _keys(probe.changed):
        for p in probe_candidates(stored, inputs, layout, only=[d.key])[:1]:
            try:
                ref = run_torch(p.arrays)
            except Exception:  # PyTorch itself does not take this size alone: not the export's fault
                continue
            problem = _onnx_matches(run_onnx, p.arrays, ref)
            if problem is not None:
                where = guards.where(arg_names, d, [s.name for s in inputs].index(d.input)) if guards else None
                found.append(Specialized(dim=d, value=probe.base[d.key], where=where,
                                         detail=f"the exported ONNX at {d.key}={p.sizes[d.key]}: {problem}"))
    if not found:
        problem = _onnx_matches(run_onnx, probe.arrays, torch_out)
        found = [Specialized(dim=d, value=probe.base[d.key], detail=f"the exported ONNX at {probe.describe()}: {problem}")
                 for d in _keys(probe.changed)]
    raise SpecializationError(label, found)


def _onnx_matches(run_onnx: RunRef, arrays: Arrays, torch_out: Arrays) -> str | None:
    """None when ONNX Runtime gives PyTorch's outputs (fp32 budget), else what differs."""
    try:
        got = run_onnx(arrays)
    except Exception as e:
        return f"ONNX Runtime fails: {_first_line(e)}"
    for name, ref in torch_out.items():
        cand = got.get(name)
        if cand is None or np.shape(cand) != np.shape(ref):
            return (f"output {name!r} has shape {list(np.shape(cand)) if cand is not None else None} "
                    f"where PyTorch gives {list(np.shape(ref))}")
        rel = fid.dense_figures(np.asarray(ref), np.asarray(cand))["rel_max_abs"]
        if not rel <= fid.default_budget(fid.Metric.REL_MAX_ABS, "fp32"):
            return f"output {name!r} differs from PyTorch (max abs error {rel:.3g} of its range)"
    return None


def follow_inputs(outputs: Sequence[TensorSpec], base: Arrays, probed: Arrays, probe: Probe) -> tuple[TensorSpec, ...]:
    """Output specs whose fixed dims changed between the base and the probe run become
    dynamic: named after the input dim they track (same sizes at both), else ``<output>_<axis>``."""
    by_sizes = {(probe.base[k], probe.sizes[k]): k for k in probe.sizes}
    out = []
    for spec in outputs:
        a, b = np.asarray(base[spec.name]), np.asarray(probed[spec.name])
        shift = a.ndim - len(spec.shape)  # 1 when samples were stacked in front of the model's axes
        dims = list(spec.shape)
        for axis, d in enumerate(spec.shape):
            if is_dynamic(d) or shift < 0 or axis == 0 and shift == 0:
                continue
            sa, sb = a.shape[axis + shift], b.shape[axis + shift]
            if sa != sb:
                dims[axis] = by_sizes.get((sa, sb), f"{spec.name}_{axis}")
        out.append(TensorSpec(spec.name, spec.dtype, tuple(dims)))
    return tuple(out)


def _keys(dims: Sequence[DimRef]) -> list[DimRef]:
    """One DimRef per key (tied dims are one dim)."""
    seen: dict[str, DimRef] = {}
    for d in dims:
        seen.setdefault(d.key, d)
    return list(seen.values())


def _tie_hint(d: DimRef, layout: Layout) -> str:
    if d.batch or d.name:
        return ""
    return (f"; if {d.input}:{d.axis} is tied to the batch, declare it: --batch-axis {d.input}:{d.axis}, "
            f"else --input-shape {d.input}=... at the size it takes")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {line[:300]}"
