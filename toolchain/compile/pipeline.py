"""`edgeship compile` end to end: source -> checked data -> reference ONNX -> artifacts -> manifest.

Order (each step may raise and stop the whole build; per-target failures never do):

1. load the source; derive the expected model inputs from it (names, dtypes, symbolic dims);
2. load calibration/validation data and check them against those inputs -- before any work;
3. export the reference fp32 ONNX (``reference/``) and confirm its inputs match;
4. reference outputs on the validation inputs (PyTorch, or ORT on a source ONNX);
5. one artifact per (engine, precision), each converted and verified on its own runtime;
6. ``data/validation.npz``, then ``manifest.json`` last, then the staging dir is swapped in.
"""

from __future__ import annotations

import inspect
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.fsutil import atomic_write_bytes, sha256_bytes
from runtime.spec import TensorSpec
from toolchain import data as data_mod
from toolchain.compile import manifest as mf
from toolchain.compile.artifacts import artifact_id, build_artifact
from toolchain.compile.context import BuildContext, SampleSet
from toolchain.compile.export import export_reference, reference_outputs
from toolchain.compile.options import CALIBRATION_METHODS, CompileOptions, UsageError
from toolchain.compile.registry import resolve_precision
from toolchain.compile.source import LoadedSource, SourceKind, load_source
from toolchain.compile.verify import accuracy, tolerances_for
from toolchain.errors import DataError, ExportError

#: validation inputs when the user gives none and the source has none (parity only)
RANDOM_VALIDATION_SAMPLES = 32


@dataclass(frozen=True)
class CompileResult:
    manifest: dict
    build_dir: Path
    exit_code: int


def compile_model(opts: CompileOptions, *, progress: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] | None = None) -> CompileResult:
    """Run a build. Raises SourceError, DataError, ExportError, UsageError (nothing written then)."""
    if opts.quant.calibration_method not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method {opts.quant.calibration_method!r}; choose one of {list(CALIBRATION_METHODS)}")
    plan = _plan(opts)
    say = progress or (lambda m: None)
    warn = warn or (lambda m: print(f"WARNING: {m}", file=sys.stderr))
    say(f"loading source {opts.source}")
    src = _with_cli_axes(load_source(opts.source, factory_kwargs=opts.factory_kwargs), opts)
    name = opts.name or src.name
    _check_name(name)
    expected = expected_inputs(src)
    calib = _calibration(opts, src, expected, plan, warn)
    val = _validation(opts, src, expected, calib, warn)
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mf.clean_leftovers(out_dir, name)
    staging = mf.staging_dir(out_dir, name)
    staging.mkdir()
    try:
        return _build(opts, src, name, plan, calib, val, expected, staging, out_dir / name, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a successful swap; a failed build leaves nothing


def _build(opts, src, name, plan, calib, val, expected, staging, final, say) -> CompileResult:
    say("exporting reference ONNX" + (" (copying source ONNX)" if src.kind is SourceKind.ONNX else " with torch.onnx.export(dynamo=True)"))
    ref = export_reference(src, out_dir=staging / "reference", external=opts.external_data)
    _confirm_inputs(src, expected, ref.inputs)
    val_arrays = data_mod.stack(val)
    say(f"reference outputs on {len(val)} validation samples")
    ref_out = reference_outputs(src, ref.model_path, ref.inputs, ref.outputs, val_arrays)
    ref_acc = accuracy(ref_out, ref.outputs[0].name, val.labels)
    work = staging / ".work"
    work.mkdir()
    ctx = BuildContext(
        model_name=name, reference_onnx=ref.model_path, inputs=ref.inputs, outputs=ref.outputs,
        calibration=calib, quant=opts.quant, torch_module=_torch_module(src),
        example_inputs=src.example_inputs, dynamic_dims={k: dict(v) for k, v in src.dynamic_axes.items()},
        work_dir=work,
    )
    artifacts = []
    for engine, precision in plan:
        artifacts.append(build_artifact(
            ctx=ctx, engine=engine, precision=precision, staging=staging, validation=val_arrays,
            labels=val.labels, reference=ref_out, reference_accuracy=ref_acc,
            tolerances=tolerances_for(precision, opts.gates), progress=say,
        ))
    shutil.rmtree(work, ignore_errors=True)
    npz = data_mod.npz_bytes(val_arrays, val.labels)
    atomic_write_bytes(staging / "data" / "validation.npz", npz)
    manifest = _manifest(opts, src, name, ref, calib, val, npz, ref_acc, artifacts, staging)
    mf.finalize(staging, final, manifest)
    say(f"wrote {final}/manifest.json ({manifest['status']})")
    return CompileResult(manifest=manifest, build_dir=final, exit_code=mf.exit_code(manifest["status"]))


def _torch_module(src: LoadedSource) -> Any:
    """An ``nn.Module`` for converters that start from PyTorch (a .pt2 program's ``.module()``)."""
    if src.kind is SourceKind.PT2:
        from toolchain import compat

        return compat.program_as_module(src.module)
    return src.module if src.is_torch else None


def _manifest(opts, src, name, ref, calib, val, npz, ref_acc, artifacts, staging) -> dict:
    from toolchain import compat

    return {
        "schema_version": mf.SCHEMA_VERSION,
        "model": {"name": name, "source": src.spec, "source_kind": src.kind.value, "source_sha256": src.sha256,
                  "opset": ref.opset, "metadata": dict(src.metadata)},
        "io": {"inputs": [s.to_json() for s in ref.inputs], "outputs": [s.to_json() for s in ref.outputs]},
        "reference": {"dir": "reference", "model_file": "model.onnx", "files": mf.files_of(staging / "reference")},
        "calibration": None if calib is None else {
            "sha256": calib.sha256, "samples": len(calib), "source": calib.source, "random": calib.random},
        "validation": {"file": "data/validation.npz", "sha256": sha256_bytes(npz), "samples": len(val),
                       "labels": val.labels is not None, "source": val.source, "random": val.random,
                       "reference_accuracy": ref_acc},
        "toolchain": compat.tool_versions(),
        "created_utc": mf.utc_now(),
        "status": mf.build_status(artifacts),
        "artifacts": artifacts,
    }


def _plan(opts: CompileOptions) -> list:
    plan = []
    for engine in opts.targets:
        for p in opts.precisions:
            r = resolve_precision(engine, p)
            if r is not None and (engine, r) not in plan:
                plan.append((engine, r))
    if not plan:
        raise UsageError(f"no artifact to build for targets {[t.value for t in opts.targets]} x "
                         f"precisions {[p.value for p in opts.precisions]}")
    return plan


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise UsageError(f"invalid model name {name!r}: use letters, digits, '-', '_' (pass --name)")


def _with_cli_axes(src: LoadedSource, opts: CompileOptions) -> LoadedSource:
    if not opts.dynamic_axes:
        return src
    if src.kind is not SourceKind.FACTORY:
        raise UsageError(f"--dynamic-axis applies to Python factories only; a {src.kind.value} source has its shapes baked in")
    axes = {k: dict(v) for k, v in src.dynamic_axes.items()}
    for inp, dims in opts.dynamic_axes.items():
        axes.setdefault(inp, {}).update(dims)
    names = src.input_names or tuple(_forward_names(src))
    for inp, dims in axes.items():
        if inp not in names:
            raise UsageError(f"--dynamic-axis: unknown input {inp!r}; inputs are {list(names)}")
        rank = src.example_inputs[names.index(inp)].dim()
        for axis in dims:
            if not 0 <= axis < rank:
                raise UsageError(f"--dynamic-axis {inp}:{axis}: axis out of range for a rank-{rank} input")
    return replace(src, dynamic_axes=axes, input_names=names)


def _forward_names(src: LoadedSource) -> list[str]:
    params = list(inspect.signature(src.module.forward).parameters.values())
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[: len(src.example_inputs)]


def expected_inputs(src: LoadedSource) -> tuple[TensorSpec, ...]:
    """The model inputs as the source declares them, known before exporting."""
    if src.kind is SourceKind.ONNX:
        import onnx

        from toolchain.compile.onnxio import io_specs

        return io_specs(onnx.load(str(src.onnx_path), load_external_data=False))[0]
    names = list(src.input_names) if src.input_names else _forward_names(src)
    specs = []
    for i, (n, t) in enumerate(zip(names, src.example_inputs)):
        axes = src.dynamic_axes.get(n, {})
        shape = tuple(axes.get(a, d) if src.kind is SourceKind.FACTORY else _pt2_dim(src, i, a, d)
                      for a, d in enumerate(t.shape))
        specs.append(TensorSpec(n, str(t.detach().cpu().numpy().dtype), shape))
    return tuple(specs)


def _pt2_dim(src: LoadedSource, i: int, axis: int, size: int) -> Any:
    import torch

    try:
        nodes = [n for n in src.module.graph.nodes if n.op == "placeholder" and n.name in src.module.graph_signature.user_inputs]
        d = nodes[i].meta["val"].shape[axis]
        return str(d) if isinstance(d, torch.SymInt) else int(d)
    except (IndexError, KeyError, AttributeError):
        return int(size)


def _confirm_inputs(src, expected, exported) -> None:
    if [(s.name, s.dtype) for s in expected] != [(s.name, s.dtype) for s in exported]:
        raise ExportError(f"{src.spec}: exported inputs {[(s.name, s.dtype) for s in exported]} differ from the "
                          f"source's {[(s.name, s.dtype) for s in expected]}")


def _needs_calibration(plan) -> bool:
    from toolchain.compile.verify import Precision

    return any(p in (Precision.INT8_STATIC, Precision.INT8) for _e, p in plan)


def _calibration(opts, src, expected, plan, warn) -> SampleSet | None:
    n = opts.quant.calibration_samples
    if opts.calibration:
        return data_mod.load_sample_set(opts.calibration, inputs=expected, role="calibration", limit=n)
    if src.calibration is not None:
        return data_mod.load_sample_set(src.calibration, inputs=expected, role="calibration", limit=n)
    if opts.random_calibration:
        warn("calibrating int8 on RANDOM data (--random-calibration): int8 scales will not match real inputs; "
             "accuracy figures of int8 artifacts are not meaningful")
        return data_mod.random_sample_set(expected, n=min(n, 32), dim_defaults=_example_dims(src, expected))
    if _needs_calibration(plan):
        raise DataError("int8 static quantization needs calibration data: pass --calibration PATH "
                        "(.npz/.npy/dir/file.py:fn), or --random-calibration to calibrate on random data, "
                        "or drop int8/int8-static from --precisions")
    return None


def _validation(opts, src, expected, calib, warn) -> SampleSet:
    lim = opts.max_validation_samples
    if opts.validation:
        return data_mod.load_sample_set(opts.validation, inputs=expected, role="validation", labels=opts.labels, limit=lim)
    if opts.labels:
        raise UsageError("--labels needs --validation (labels belong to the validation inputs)")
    if src.validation is not None:
        return data_mod.load_sample_set(src.validation, inputs=expected, role="validation", limit=lim)
    if calib is not None and not calib.random:
        warn("no --validation data: verifying parity on the calibration inputs (no accuracy figures)")
        return calib
    warn(f"no --validation data: verifying parity on {RANDOM_VALIDATION_SAMPLES} random inputs (no accuracy figures)")
    return data_mod.random_sample_set(expected, n=RANDOM_VALIDATION_SAMPLES, seed=1,
                                      dim_defaults=_example_dims(src, expected))


def _example_dims(src, expected) -> dict[str, int]:
    """Sizes of the symbolic non-batch dims (e.g. ``seq``) in the source's example inputs.

    Random data uses them so that it fits artifacts converted at the example's shapes (TFLite).
    """
    out: dict[str, int] = {}
    for spec, ex in zip(expected, src.example_inputs or ()):
        shape = tuple(getattr(ex, "shape", ()))
        for axis, d in enumerate(spec.shape[1:], start=1):
            if not isinstance(d, int) and axis < len(shape):
                out.setdefault(str(d), int(shape[axis]))
    return out
