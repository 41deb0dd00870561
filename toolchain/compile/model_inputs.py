"""What the model takes, known before any work: names, dtypes, dims, batch axes, example
shapes, and the checks that refuse a build up front (a fixed-batch export, bad flags).

Everything here reads the loaded source and the options; nothing is exported or converted.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

from runtime.spec import TensorSpec, is_dynamic
from toolchain.compile.options import CompileOptions, UsageError
from toolchain.compile.samples import Layout
from toolchain.compile.source import LoadedSource, SourceKind
from toolchain.errors import ExportError


def with_cli_axes(src: LoadedSource, opts: CompileOptions) -> LoadedSource:
    """The source with ``--dynamic-axis`` and ``--batch-axis`` merged in (CLI wins).

    Raises: UsageError for an unknown input or an axis out of range.
    """
    if opts.dynamic_axes and src.kind is not SourceKind.FACTORY:
        raise UsageError(f"--dynamic-axis applies to Python factories only; a {src.kind.value} source has its shapes baked in")
    if not opts.dynamic_axes and not opts.batch_axes and not opts.input_shapes:
        return src
    axes = {k: dict(v) for k, v in src.dynamic_axes.items()}
    for inp, dims in opts.dynamic_axes.items():
        axes.setdefault(inp, {}).update(dims)
    if src.kind is SourceKind.ONNX:
        ranks = {s.name: len(s.shape) for s in expected_inputs(src)}
        names = tuple(ranks)
    else:
        names = src.input_names or tuple(forward_names(src))
        ranks = {n: t.dim() for n, t in zip(names, src.example_inputs)}
    for flag, table in (("--dynamic-axis", axes), ("--batch-axis", opts.batch_axes), ("--input-shape", opts.input_shapes)):
        for inp in table:
            if inp not in ranks:
                raise UsageError(f"{flag}: unknown input {inp!r}; inputs are {list(names)}")
    for inp, dims in axes.items():
        for axis in dims:
            if not 0 <= axis < ranks[inp]:
                raise UsageError(f"--dynamic-axis {inp}:{axis}: axis out of range for a rank-{ranks[inp]} input")
    for inp, axis in opts.batch_axes.items():
        if axis is not None and not 0 <= axis < ranks[inp]:
            raise UsageError(f"--batch-axis {inp}:{axis}: axis out of range for a rank-{ranks[inp]} input")
    batch = {**dict(src.batch_axes), **dict(opts.batch_axes)}
    if src.kind is SourceKind.ONNX:
        return replace(src, batch_axes=batch)
    return replace(src, dynamic_axes=axes, input_names=names, batch_axes=batch)


def forward_names(src: LoadedSource) -> list[str]:
    params = list(inspect.signature(src.module.forward).parameters.values())
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[: len(src.example_inputs)]


def expected_inputs(src: LoadedSource) -> tuple[TensorSpec, ...]:
    """The model inputs as the source declares them, known before exporting."""
    if src.kind is SourceKind.ONNX:
        import onnx

        from toolchain.compile.onnxio import io_specs

        return io_specs(onnx.load(str(src.onnx_path), load_external_data=False))[0]
    names = list(src.input_names) if src.input_names else forward_names(src)
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


def layout_of(src: LoadedSource, inputs: tuple[TensorSpec, ...]) -> Layout:
    """Batch axes: declared (``--batch-axis``/``batch_axes``) first, else from the dims.

    A torch source's batch axis must be one the export keeps dynamic or a size-1 axis:
    the example's other fixed sizes are not a batch.
    """
    return Layout.of(inputs, src.batch_axes)


def static_batch_note(src: LoadedSource, inputs: tuple[TensorSpec, ...]) -> str | None:
    """A warning when a PyTorch export of batch-1 examples declares no dynamic axis: every
    artifact will take batch 1 only (bench --batch 2 and batched requests are refused)."""
    if not src.is_torch or src.kind is SourceKind.PT2 or src.dynamic_axes:
        return None
    ranked = [(s, t) for s, t in zip(inputs, src.example_inputs) if t.dim() >= 1 and s.name not in src.batch_axes]
    if not ranked or {int(t.shape[0]) for _s, t in ranked} != {1}:
        return None
    axes = " ".join(f"--dynamic-axis {s.name}:0:batch" for s, _t in ranked)
    return (f"the example inputs have batch 1 and no dynamic axes: every artifact takes batch 1 only "
            f"(benchmarks at --batch 2 and batched requests will be refused); to batch, pass {axes}")


def check_fixed_batch(src: LoadedSource, inputs: tuple[TensorSpec, ...], layout: Layout) -> None:
    """A PyTorch export whose example has a batch > 1 and no dynamic axis would only take that
    batch, while edgeship verifies and serves samples one at a time: refuse before any work.

    Raises: UsageError saying what to pass.
    """
    if not src.is_torch or src.kind is SourceKind.PT2 or src.dynamic_axes:
        return
    ranked = [(s, t) for s, t in zip(inputs, src.example_inputs) if t.dim() >= 1 and s.name not in src.batch_axes]
    if not ranked:
        return
    leads = {int(t.shape[0]) for _s, t in ranked}
    if len(leads) != 1 or leads.pop() <= 1:
        return
    n = int(ranked[0][1].shape[0])
    names = [s.name for s, _t in ranked]
    axes = " ".join(f"--dynamic-axis {m}:0:batch" for m in names)
    raise UsageError(
        f"{src.spec}: the example inputs have batch {n} ({', '.join(f'{s.name} {list(t.shape)}' for s, t in ranked)}) "
        f"and no dynamic axes, so every artifact would only take batch {n}, while edgeship verifies and serves "
        f"one sample at a time. Declare the batch dynamic ({axes}, or dynamic_axes="
        f"{ {m: {0: 'batch'} for m in names} } in the factory), or give example inputs of batch 1; if axis 0 is "
        f"not a batch, say so with " + " ".join(f"--batch-axis {m}:none" for m in names))


def example_shapes(src: LoadedSource, inputs: tuple[TensorSpec, ...], opts: CompileOptions) -> dict[str, tuple[int, ...]]:
    """A concrete example shape per input: ``--input-shape``, else the PyTorch example's."""
    out: dict[str, tuple[int, ...]] = {}
    for s, t in zip(inputs, src.example_inputs or ()):
        out[s.name] = tuple(int(d) for d in getattr(t, "shape", ()))
    out.update({k: tuple(v) for k, v in opts.input_shapes.items()})
    for s in inputs:
        ex = out.get(s.name)
        if ex is not None and (len(ex) != len(s.shape) or any(not is_dynamic(d) and d != e for d, e in zip(s.shape, ex))):
            raise UsageError(f"--input-shape {s.name}={','.join(map(str, ex))} does not fit the model's input "
                             f"{s.describe()}")
    return out


def confirm_inputs(src: LoadedSource, expected, exported) -> None:
    """The exported graph takes the inputs the source declared (names and dtypes, in order)."""
    if [(s.name, s.dtype) for s in expected] != [(s.name, s.dtype) for s in exported]:
        raise ExportError(f"{src.spec}: exported inputs {[(s.name, s.dtype) for s in exported]} differ from the "
                          f"source's {[(s.name, s.dtype) for s in expected]}")
