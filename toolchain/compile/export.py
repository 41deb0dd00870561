"""Export a loaded source to the reference fp32 ONNX and compute reference outputs.

Stages, each named in an :class:`ExportError`: ``torch.export`` -> ``decomposition`` ->
``onnx translation`` (all inside ``torch.onnx.export(dynamo=True)``), then ``checker``
(``onnx.checker``) and ``shape inference``. An ONNX source skips the exporter but still goes
through the checker and shape inference, and is re-saved with its external data beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.spec import TensorSpec, contiguous
from toolchain.compile.dynamic import DimRef, GuardLog, SpecializationError, Specialized, parse_export_conflicts
from toolchain.compile.onnxio import io_specs, rename_io, save_onnx, set_input_dims, set_metadata
from toolchain.compile.samples import Layout, run_samples
from toolchain.compile.source import LoadedSource, SourceKind
from toolchain.errors import DataError, ExportError, SourceError

OPSET = 18


@dataclass(frozen=True)
class ExportResult:
    model_path: Path
    files: tuple[Path, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    guards: GuardLog | None = None  # torch's shape guards during the export (torch sources)


def export_reference(src: LoadedSource, *, out_dir: Path, opset: int = OPSET, external: bool | None = None,
                     static_dims: dict[str, dict[int, int]] | None = None) -> ExportResult:
    """Write ``out_dir/model.onnx`` (+ ``model.onnx.data`` for large weights).

    An ONNX source's placeholder input dims (``'?'``, empty) are unnamed in the copy, so that
    nothing downstream ties them; ``static_dims`` (``--allow-static``) fixes input dims of an
    ONNX source. A torch source's dims are fixed by dropping them from its dynamic axes.

    Raises:
        SpecializationError: torch fixed a dim declared dynamic (names it, its value, the line).
        ExportError: a stage failed (message names the stage and, where known, op and source line).
        SourceError: the ONNX source cannot be read.
    """
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    guards = None
    if src.kind is SourceKind.ONNX:
        try:
            model = onnx.load(str(src.onnx_path))
        except Exception as e:
            raise SourceError(f"{src.onnx_path}: onnx.load failed: {e}") from e
        _untie_placeholders(model)
        set_input_dims(model, static_dims or {})
    else:
        model, guards = _torch_export(src, opset=opset)
    model = _check_and_infer(model, label=src.spec)
    set_metadata(model, {"edgeship.source": src.spec, "edgeship.precision": "fp32"})
    path = out_dir / "model.onnx"
    files = save_onnx(model, path, external=external)
    # re-read the saved model for its IO (the in-memory proto may now point at external data)
    ins, outs = io_specs(onnx.load(str(path), load_external_data=False))
    if src.output_names and tuple(o.name for o in outs) != tuple(src.output_names):
        raise ExportError(f"{src.spec}: output names {[o.name for o in outs]} do not match the requested {list(src.output_names)}")
    used = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    return ExportResult(model_path=path, files=tuple(files), inputs=ins, outputs=outs, opset=used, guards=guards)


def _untie_placeholders(model: Any) -> None:
    """``'?'`` and empty dim params mean "unknown", each its own size: make them unnamed."""
    for vi in model.graph.input:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param.strip() in ("", "?"):
                dim.Clear()


def arg_names(src: LoadedSource) -> list[str]:
    """The names torch gives the graph inputs: the forward arguments (or the program's inputs)."""
    from toolchain import compat

    if src.kind is SourceKind.PT2:
        return compat.exported_program_input_names(src.module)
    from toolchain.compile.model_inputs import forward_names

    return forward_names(src)


def _torch_export(src: LoadedSource, *, opset: int) -> tuple[Any, GuardLog]:
    """Export without asking torch for our names (it fails when an internal value already has
    one), then rename the graph's inputs/outputs to the user's (:func:`rename_io`)."""
    from toolchain import compat

    fwd = arg_names(src)
    users = list(src.input_names) if src.input_names and src.kind is SourceKind.FACTORY else fwd
    axes = None
    if src.kind is SourceKind.FACTORY and src.dynamic_axes:
        axes = {fwd[users.index(k)]: dict(v) for k, v in src.dynamic_axes.items()}
    user_file = getattr(getattr(type(src.module), "forward", None), "__code__", None)
    guards = GuardLog(user_files=(user_file.co_filename,) if user_file is not None else ())
    with compat.quiet_torch(), guards:
        try:
            model = compat.onnx_export(src.module, tuple(src.example_inputs), input_names=None, output_names=None,
                                       dynamic_axes=axes, opset=opset)
        except Exception as e:
            _raise_specialization(src, e, fwd, users, guards)
            info = compat.classify_export_error(e)
            info["module"] = _module_at(src.module, info["where"]) if src.kind is SourceKind.FACTORY else None
            raise ExportError(_export_message(src.spec, info, e)) from e
    _name_io(src, model, users)
    return model, guards


def _raise_specialization(src: LoadedSource, e: BaseException, fwd: list[str], users: list[str], guards: GuardLog) -> None:
    """torch.export refused because the code fixes a dim declared dynamic: say which, where."""
    from toolchain import compat

    found = []
    for arg, axis, value in parse_export_conflicts(compat.strip_ansi(str(e))):
        if arg not in fwd:
            continue
        user = users[fwd.index(arg)]
        dim = DimRef(user, axis, src.dynamic_axes.get(user, {}).get(axis))
        found.append(Specialized(dim=dim, value=value, where=guards.where(fwd, dim, fwd.index(arg)),
                                 detail="torch.export: the code needs that exact size"))
    if found:
        raise SpecializationError(src.spec, found) from e


def _name_io(src: LoadedSource, model: Any, users: list[str]) -> None:
    outs = [o.name for o in model.graph.output]
    want_out = list(src.output_names) if src.output_names else outs
    if len(want_out) != len(outs):
        raise ExportError(f"{src.spec}: the graph has {len(outs)} outputs {outs}, the factory names "
                          f"{len(want_out)}: {want_out}")
    ins = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    rename_io(model, inputs=dict(zip(ins, users)), outputs=dict(zip(outs, want_out)))


def _module_at(root: Any, where: str | None) -> str | None:
    """The submodule (path and class) whose ``forward`` holds the failing source line."""
    if not where:
        return None
    try:
        file, line = where.split(" in ")[0].rsplit(":", 1)
        line_no = int(line)
    except (ValueError, IndexError):
        return None
    best = None
    for path, mod in root.named_modules():
        code = getattr(type(mod).forward, "__code__", None)
        if code is None or Path(code.co_filename).resolve() != Path(file).resolve():
            continue
        lines = [ln for _s, _e, ln in code.co_lines() if ln is not None]
        if lines and min(lines) <= line_no <= max(lines):
            best = f"{path or '<root>'} ({type(mod).__name__})"
            break
    return best


def _export_message(spec: str, info: dict, exc: BaseException) -> str:
    parts = [f"{spec}: export failed at stage '{info['stage'] or 'torch.onnx.export'}'"]
    if info.get("module"):
        parts.append(f"module {info['module']}")
    if info["op"]:
        parts.append(f"op {info['op']}")
    if info["where"]:
        parts.append(f"at {info['where']}")
    msg = ", ".join(parts)
    return msg + f"; cause: {info['summary'] or type(exc).__name__}"


def _check_and_infer(model: Any, *, label: str) -> Any:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as e:
        raise ExportError(f"{label}: export failed at stage 'checker': {e}") from e
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except Exception as e:
        raise ExportError(f"{label}: export failed at stage 'shape inference': {e}") from e


def reference_outputs(src: LoadedSource, ref_onnx: Path, inputs: Sequence[TensorSpec],
                      outputs: Sequence[TensorSpec], stored: dict[str, np.ndarray], *,
                      layout: Layout) -> dict[str, np.ndarray]:
    """Reference outputs (samples along axis 0) for stored inputs: PyTorch for torch sources
    (the original model, not the export), ONNX Runtime on the source ONNX otherwise. Runs in
    chunks of 64 where the model takes a batch (:func:`toolchain.compile.samples.run_samples`).

    Raises: DataError naming the samples and the user's source line; ExportError.
    """
    span = [0, 0]

    def note(start: int, stop: int) -> None:
        span[:] = [start, stop]

    run = (lambda f: _torch_run(src, inputs, outputs, f)) if src.is_torch else (lambda f: _ort_run(ref_onnx, f))
    try:
        return run_samples(run, stored, layout=layout, names=[o.name for o in outputs],
                           batched=layout.batchable(inputs, outputs), on_chunk=note)
    except ExportError:
        raise
    except Exception as e:  # e.g. token ids beyond the embedding table: the data, not the toolchain
        raise DataError(f"{src.spec}: the reference model failed on validation samples {span[0]}..{span[1] - 1}: "
                        f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                        f"{_user_frame(e)}; check the values of the data (e.g. ids within the vocabulary)") from e


def _user_frame(e: BaseException) -> str:
    """`` (at file.py:12 in forward)`` for the innermost frame outside installed packages, if any."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "site-packages" not in f.filename and "/toolchain/" not in f.filename and "/runtime/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()})"


def _torch_run(src, inputs, outputs, feeds) -> dict[str, np.ndarray]:
    import torch
    from torch.utils._pytree import tree_leaves

    fn = src.module.module() if src.kind is SourceKind.PT2 else src.module
    args = [torch.from_numpy(contiguous(feeds[s.name]).copy()) for s in inputs]
    with torch.no_grad():
        res = fn(*args)
    leaves = [t for t in tree_leaves(res) if isinstance(t, torch.Tensor)]
    if len(leaves) != len(outputs):
        raise ExportError(f"{src.spec}: PyTorch returned {len(leaves)} tensors, the ONNX graph has {len(outputs)} outputs")
    return {o.name: t.detach().cpu().numpy() for o, t in zip(outputs, leaves)}


def _ort_run(path: Path, feeds) -> dict[str, np.ndarray]:
    import runtime

    with runtime.open_model(path, engine="onnxruntime") as s:
        return s.run(feeds)
