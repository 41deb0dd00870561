"""`edgeship compile` end to end: source -> checked data -> reference ONNX -> artifacts -> manifest.

Order (each step may raise and stop the whole build; per-target failures never do):

1. load the source; derive the expected model inputs from it (names, dtypes, dims, batch
   axes) and refuse a fixed-batch export before any work (:mod:`toolchain.compile.model_inputs`);
2. load calibration/validation data and check them against those inputs -- before any work;
3. the reference (:mod:`toolchain.compile.reference`): fp32 ONNX (``reference/``), its outputs
   on the validation samples, and the proof that its dynamic dims take other sizes;
4. the task (``--task``, the factory's ``metadata["task"]``, else inferred from the outputs)
   that picks each output's fidelity metric;
5. one artifact per (engine, precision), each converted and verified on its own runtime,
   at the validation sizes and, where it keeps dynamic dims, at the probe sizes;
6. ``data/validation.npz``, then ``manifest.json`` last, then the staging dir is swapped in.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from runtime.fsutil import atomic_write_bytes, sha256_bytes
from toolchain.compile import data as data_mod
from toolchain.compile import manifest as mf
from toolchain.compile import model_inputs as mi
from toolchain.compile.artifacts import Checks, build_artifact
from toolchain.compile.context import BuildContext, SampleSet
from toolchain.compile.fidelity import Task, infer_task, primary_output
from toolchain.compile.options import CompileOptions, UsageError
from toolchain.compile.reference import Reference, build_reference
from toolchain.compile.registry import resolve_precision
from toolchain.compile.samples import Layout
from toolchain.compile.source import LoadedSource, SourceKind, load_source
from toolchain.compile.verify import Precision, accuracy
from toolchain.errors import DataError

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
    plan = _plan(opts)
    say = progress or (lambda m: None)
    warn = warn or (lambda m: print(f"WARNING: {m}", file=sys.stderr))
    say(f"loading source {opts.source}")
    src = mi.with_cli_axes(load_source(opts.source, factory_kwargs=opts.factory_kwargs), opts)
    name = opts.name or src.name
    _check_name(name)
    expected = mi.expected_inputs(src)
    layout = mi.layout_of(src, expected)
    mi.check_fixed_batch(src, expected, layout)
    if note := mi.static_batch_note(src, expected):
        warn(note)
    shapes = mi.example_shapes(src, expected, opts)
    calib = _calibration(opts, src, expected, layout, shapes, plan, warn)
    val = _validation(opts, src, expected, layout, shapes, calib, warn)
    out_dir = Path(opts.out_dir).resolve()  # converters chdir into scratch dirs (ORT)
    out_dir.mkdir(parents=True, exist_ok=True)
    mf.clean_leftovers(out_dir, name)
    staging = mf.staging_dir(out_dir, name)
    staging.mkdir()
    try:
        return _build(opts, src, name, plan, calib, val, expected, layout, staging, out_dir / name, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a successful swap; a failed build leaves nothing


def _build(opts, src, name, plan, calib, val, expected, layout, staging, final, say) -> CompileResult:
    say("exporting reference ONNX" + (" (copying source ONNX)" if src.kind is SourceKind.ONNX else " with torch.onnx.export(dynamo=True)"))
    val_arrays = data_mod.stack(val)
    ref = build_reference(src, expected=expected, out_dir=staging / "reference", layout=layout, stored=val_arrays,
                          allow_static=opts.allow_static, external=opts.external_data, say=say)
    say(f"reference outputs on {len(val)} validation samples"
        + (f"; dynamic dims also verified at {ref.probe.describe()}" if ref.probe else ""))
    ex = ref.export
    task = _task(opts, ref.src, ref.outputs, val.labels)
    ref_acc = accuracy(ref.outputs, primary_output(task, ref.outputs, labels=val.labels is not None), val.labels)
    work = staging / ".work"
    work.mkdir()
    ctx = BuildContext(
        model_name=name, reference_onnx=ex.model_path, inputs=ex.inputs, outputs=ex.outputs,
        calibration=calib, quant=opts.quant, torch_module=_torch_module(ref.src),
        example_inputs=ref.src.example_inputs, dynamic_dims={k: dict(v) for k, v in ref.src.dynamic_axes.items()},
        work_dir=work, layout=layout,
    )
    checks = Checks(validation=val_arrays, labels=val.labels, reference=ref.outputs, reference_accuracy=ref_acc,
                    task=task, gates=opts.gates, layout=layout, probe=ref.probe, probe_reference=ref.probe_outputs)
    artifacts = [build_artifact(ctx=ctx, engine=engine, precision=precision, staging=staging, checks=checks,
                                progress=say) for engine, precision in plan]
    shutil.rmtree(work, ignore_errors=True)
    npz = data_mod.npz_bytes(val_arrays, val.labels)
    atomic_write_bytes(staging / "data" / "validation.npz", npz)
    manifest = _manifest(opts, ref, name, calib, val, npz, ref_acc, artifacts, staging, task, layout)
    mf.finalize(staging, final, manifest)
    say(f"wrote {final}/manifest.json ({manifest['status']})")
    return CompileResult(manifest=manifest, build_dir=final, exit_code=mf.exit_code(manifest["status"]))


def _task(opts: CompileOptions, src: LoadedSource, ref_out: dict, labels) -> Task:
    """``--task``, else the factory's ``metadata["task"]``, else inferred from the outputs."""
    if opts.task is not None:
        return opts.task
    declared = (src.metadata or {}).get("task")
    if declared is not None:
        try:
            return Task.parse(declared)
        except ValueError as e:
            raise UsageError(f"{src.spec}: metadata['task']: {e}") from None
    return infer_task(ref_out, labels=labels is not None)


def _torch_module(src: LoadedSource) -> Any:
    """An ``nn.Module`` for converters that start from PyTorch (a .pt2 program's ``.module()``)."""
    if src.kind is SourceKind.PT2:
        from toolchain import compat

        return compat.program_as_module(src.module)
    return src.module if src.is_torch else None


def _manifest(opts, ref: Reference, name, calib, val, npz, ref_acc, artifacts, staging, task: Task, layout: Layout) -> dict:
    from toolchain import compat

    src, ex = ref.src, ref.export
    inputs = [s.to_json() | {"batch_axis": layout.axis(s.name)} for s in ex.inputs]
    return {
        "schema_version": mf.SCHEMA_VERSION,
        "model": {"name": name, "source": src.spec, "source_kind": src.kind.value, "source_sha256": src.sha256,
                  "opset": ex.opset, "metadata": {**dict(src.metadata), "task": task.value},
                  "static_dims": list(ref.static_dims)},
        "io": {"inputs": inputs, "outputs": [s.to_json() for s in ex.outputs]},
        "reference": {"dir": "reference", "model_file": "model.onnx", "files": mf.files_of(staging / "reference"),
                      "verified_sizes": None if ref.probe is None else {
                          k: [ref.probe.base[k], v] for k, v in ref.probe.sizes.items()}},
        "calibration": None if calib is None else {
            "sha256": calib.sha256, "samples": len(calib), "source": calib.source, "random": calib.random},
        "validation": {"file": "data/validation.npz", "sha256": sha256_bytes(npz), "samples": len(val),
                       "labels": val.labels is not None, "source": val.source, "random": val.random,
                       "reference_accuracy": ref_acc, "layout": "samples along axis 0; batch axis moved to the front"},
        # where captured device data came from (a capture set: its hash, devices, time range)
        "data_provenance": {"calibration": data_mod.provenance(opts.calibration),
                            "validation": data_mod.provenance(opts.validation)},
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


def _needs_calibration(plan) -> bool:
    return any(p in (Precision.INT8_STATIC, Precision.INT8) for _e, p in plan)


def _calibration(opts, src, expected, layout, shapes, plan, warn) -> SampleSet | None:
    n = opts.quant.calibration_samples
    load = dict(inputs=expected, role="calibration", layout=layout, limit=n)
    if opts.calibration:
        return data_mod.load_sample_set(opts.calibration, **load)
    if src.calibration is not None:
        return data_mod.load_sample_set(src.calibration, **load)
    if opts.random_calibration and _needs_calibration(plan):
        warn("calibrating int8 on RANDOM data (--random-calibration): int8 scales will not match real inputs; "
             "accuracy figures of int8 artifacts are not meaningful")
        return data_mod.random_sample_set(expected, n=min(n, 32), layout=layout, example_shapes=shapes)
    if _needs_calibration(plan):
        raise DataError("int8 static quantization needs calibration data: pass --calibration PATH "
                        "(.npz/.npy/dir/file.py:fn), or --random-calibration to calibrate on random data, "
                        "or drop int8/int8-static from --precisions")
    return None


def _validation(opts, src, expected, layout, shapes, calib, warn) -> SampleSet:
    lim = opts.max_validation_samples
    if opts.validation:
        return data_mod.load_sample_set(opts.validation, inputs=expected, role="validation", layout=layout,
                                        labels=opts.labels, limit=lim)
    if opts.labels:
        raise UsageError("--labels needs --validation (labels belong to the validation inputs)")
    if src.validation is not None:
        return data_mod.load_sample_set(src.validation, inputs=expected, role="validation", layout=layout, limit=lim)
    if calib is not None and not calib.random:
        warn("no --validation data: verifying parity on the calibration inputs (no accuracy figures)")
        return calib
    warn(f"no --validation data: verifying parity on {RANDOM_VALIDATION_SAMPLES} random inputs (no accuracy figures)")
    return data_mod.random_sample_set(expected, n=RANDOM_VALIDATION_SAMPLES, layout=layout, seed=1,
                                      example_shapes=shapes)
