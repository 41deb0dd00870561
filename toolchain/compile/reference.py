"""The reference of a build: the fp32 ONNX, its outputs on the validation data, and the proof
that its dynamic dims are dynamic (a probe at second sizes), with the ``--allow-static``
fallback.

Order: export -> reference outputs (PyTorch, or ORT on an ONNX source) -> probe the reference
at second sizes -> (torch) the exported ONNX against PyTorch at those sizes -> output dims that
follow the inputs are declared dynamic in ``reference/model.onnx``. A dim the graph does not
honour stops the build (:class:`~toolchain.compile.dynamic.SpecializationError`) unless every
such dim is allowed static: then the reference is rebuilt with those dims fixed, and the
manifest says so (``model.static_dims``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.spec import TensorSpec
from toolchain.compile import sizes
from toolchain.compile.dynamic import Probe, SpecializationError
from toolchain.compile.export import ExportResult, arg_names, export_reference, reference_outputs
from toolchain.compile.model_inputs import confirm_inputs
from toolchain.compile.onnxio import set_output_dims
from toolchain.compile.samples import Arrays, Layout
from toolchain.compile.source import LoadedSource, SourceKind
from toolchain.errors import DataError


@dataclass(frozen=True)
class Reference:
    export: ExportResult
    outputs: Arrays  # on the validation samples, samples along axis 0
    src: LoadedSource  # with the dims that were made static dropped from its dynamic axes
    probe: Probe | None = None
    probe_outputs: Arrays | None = None
    static_dims: tuple[dict, ...] = field(default_factory=tuple)


def build_reference(src: LoadedSource, *, expected: tuple[TensorSpec, ...], out_dir: Path, layout: Layout,
                    stored: Arrays, allow_static: tuple[str, ...], external: bool | None,
                    say: Callable[[str], None]) -> Reference:
    """Export and check the reference (see the module docstring).

    Raises:
        SpecializationError: a dynamic dim is fixed in the export and not allowed static.
        DataError, ExportError, SourceError: as the export and the reference run raise them.
    """
    static: list[dict] = []
    onnx_static: dict[str, dict[int, int]] = {}
    while True:
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            return _attempt(src, expected=expected, out_dir=out_dir, layout=layout, stored=stored,
                            external=external, onnx_static=onnx_static, static=tuple(static))
        except SpecializationError as e:
            if not allow_static or not all(any(f.dim.matches(a) for a in allow_static) for f in e.found):
                raise
            if any(entry["dim"] == f.dim.key for f in e.found for entry in static):
                raise  # already fixed and still failing: not a specialization we can cure
            for f in e.found:
                size = _static_size(src, f.dim, stored, layout)
                static.append({"dim": f.dim.key, "input": f.dim.input, "axis": f.dim.axis, "size": size,
                               "reason": str(f.detail or "not dynamic in the export")})
                say(f"--allow-static {f.dim.key}: building {f.dim.label} static at {size} ({f.detail})")
                src, onnx_static = _fix(src, f.dim, size, onnx_static)


def _attempt(src, *, expected, out_dir, layout, stored, external, onnx_static, static) -> Reference:
    ex = export_reference(src, out_dir=out_dir, external=external, static_dims=onnx_static or None)
    confirm_inputs(src, expected, ex.inputs)
    run_ref = lambda arrays: reference_outputs(src, ex.model_path, ex.inputs, ex.outputs, arrays, layout=layout)  # noqa: E731
    base = run_ref(stored)
    engine = "PyTorch" if src.is_torch else "ONNX Runtime"
    chosen = sizes.choose_probe(src.spec, run_ref, stored, ex.inputs, layout, engine_name=engine)
    if chosen is None:
        return Reference(export=ex, outputs=base, src=src, static_dims=static)
    probe, probe_out = chosen
    if src.is_torch:
        run_onnx = lambda arrays: _ort_outputs(ex, arrays, layout)  # noqa: E731
        sizes.check_reference_onnx(src.spec, ex.model_path, probe, probe_out, run_onnx=run_onnx, stored=stored,
                                   inputs=ex.inputs, layout=layout, run_torch=run_ref, guards=ex.guards,
                                   arg_names=arg_names(src))
    outs = sizes.follow_inputs(ex.outputs, base, probe_out, probe)
    if outs != tuple(ex.outputs):
        ex = _declare_outputs(ex, outs)
    return Reference(export=ex, outputs=base, src=src, probe=probe, probe_outputs=probe_out, static_dims=static)


def _ort_outputs(ex: ExportResult, arrays: Arrays, layout: Layout) -> Arrays:
    import runtime

    from toolchain.compile.samples import run_samples

    with runtime.open_model(ex.model_path, engine="onnxruntime") as s:
        return run_samples(s.run, arrays, layout=layout, names=[o.name for o in ex.outputs],
                           batched=layout.batchable(ex.inputs, ex.outputs))


def _declare_outputs(ex: ExportResult, outs: tuple[TensorSpec, ...]) -> ExportResult:
    """Write the dynamic output dims into ``reference/model.onnx`` (the converters read it)."""
    import onnx

    from toolchain.compile.onnxio import save_onnx, uses_external

    model = onnx.load(str(ex.model_path))
    set_output_dims(model, {o.name: {a: d for a, d in enumerate(o.shape) if d != old.shape[a]}
                            for o, old in zip(outs, ex.outputs)})
    save_onnx(model, ex.model_path, external=uses_external(ex.model_path))
    return replace(ex, outputs=outs)


def _static_size(src: LoadedSource, dim, stored: Arrays, layout: Layout) -> int:
    """The size a dim is fixed at: the PyTorch example's, else the validation data's (a batch: 1).

    Raises: DataError when the validation data has another size there.
    """
    data = 1
    if not dim.batch:
        b = layout.axis(dim.input)
        axis = dim.axis if b is None else dim.axis - (1 if dim.axis > b else 0)
        data = int(np.asarray(stored[dim.input]).shape[axis + 1])
    if not src.is_torch:
        return data
    names = list(src.input_names or arg_names(src))
    size = int(src.example_inputs[names.index(dim.input)].shape[dim.axis])
    if not dim.batch and data != size:
        raise DataError(f"--allow-static {dim.key}: the model is built static at {dim.label}={size} (the example's "
                        f"size) but the validation data has {data} there; give data of that size")
    return size


def _fix(src: LoadedSource, dim, size: int, onnx_static: dict) -> tuple[LoadedSource, dict]:
    if src.kind is SourceKind.ONNX:
        out = {k: dict(v) for k, v in onnx_static.items()}
        out.setdefault(dim.input, {})[dim.axis] = size
        return src, out
    axes = {k: {a: n for a, n in v.items() if not (n == dim.name if dim.name else (k == dim.input and a == dim.axis))}
            for k, v in src.dynamic_axes.items()}
    return replace(src, dynamic_axes={k: v for k, v in axes.items() if v}), onnx_static
