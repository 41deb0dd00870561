"""Small ONNX file helpers shared by the exporter and the converters.

- :func:`save_onnx` writes a model inline, or with its weights in one ``<file>.data`` beside it
  when they are large (the protobuf limit is 2 GiB), and returns every file written, so that
  "every file the model needs travels with it" is checkable.
- :func:`io_specs` reads input/output :class:`runtime.TensorSpec` from a graph.
- :func:`rename_io` gives the graph the user's input/output names (an internal value that
  collides with one is renamed, never the user's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from runtime.spec import TensorSpec

#: weights above this total go to an external ``.data`` file (protobuf caps a file at 2 GiB)
EXTERNAL_DATA_THRESHOLD_BYTES = 512 * 1024 * 1024

_ELEM = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}


def weights_bytes(model: Any) -> int:
    return sum(len(t.raw_data) if t.raw_data else 0 for t in model.graph.initializer)


def save_onnx(model: Any, path: Path, *, external: bool | None = None) -> list[Path]:
    """Save ``model`` to ``path``; weights go to ``path.name + '.data'`` when ``external``
    (default: when they exceed :data:`EXTERNAL_DATA_THRESHOLD_BYTES`). Returns the files written.
    """
    import onnx

    if external is None:
        external = weights_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return [path] + ([data] if data.exists() else [])


def model_files(path: Path) -> list[Path]:
    """The model file plus the external-data files it references (all must exist).

    Raises: FileNotFoundError naming the missing file.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    m = onnx.load(str(path), load_external_data=False)
    locs = sorted({
        dict((e.key, e.value) for e in t.external_data)["location"]
        for t in _get_all_tensors(m) if uses_external_data(t)
    })
    out = [Path(path)]
    for loc in locs:
        f = Path(path).parent / loc
        if not f.is_file():
            raise FileNotFoundError(f"{path}: external data file {loc} is missing")
        out.append(f)
    return out


def uses_external(path: Path) -> bool:
    return len(model_files(path)) > 1


def _spec(vi: Any) -> TensorSpec:
    tt = vi.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorSpec(vi.name, _ELEM.get(tt.elem_type, str(tt.elem_type)), tuple(dims))


def io_specs(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Graph inputs (excluding initializers) and outputs as TensorSpecs."""
    inits = {i.name for i in model.graph.initializer}
    ins = tuple(_spec(v) for v in model.graph.input if v.name not in inits)
    outs = tuple(_spec(v) for v in model.graph.output)
    return ins, outs


def set_metadata(model: Any, props: dict[str, str]) -> None:
    """Set (replace) ``metadata_props`` entries in place."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=str(v))


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def value_names(model: Any) -> set[str]:
    """Every value name defined anywhere in the model (inputs, initializers, node outputs)."""
    names: set[str] = set()
    for g in _graphs(model.graph):
        names.update(i.name for i in g.input)
        names.update(i.name for i in g.initializer)
        for n in g.node:
            names.update(o for o in n.output if o)
    return names


def rename_io(model: Any, *, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Give graph inputs/outputs the user's names, in place (``{current: wanted}``).

    The user's names always win: an internal value that already carries a wanted name (a
    node called ``embedding``) is renamed to ``<name>__internal`` (``__internal2``... if taken).
    """
    wanted = {old: new for old, new in {**inputs, **outputs}.items() if old != new}
    if not wanted:
        return
    taken = value_names(model)
    mapping = dict(wanted)
    final = set(wanted.values())
    for new in final:
        if new in taken and new not in wanted:  # an internal value squats on a user's name
            k, alt = 1, f"{new}__internal"
            while alt in taken or alt in final:
                k += 1
                alt = f"{new}__internal{k}"
            mapping[new] = alt
            taken.add(alt)
    for g in _graphs(model.graph):
        for coll in (g.input, g.output, g.value_info, g.initializer):
            for v in coll:
                v.name = mapping.get(v.name, v.name)
        for n in g.node:
            n.input[:] = [mapping.get(x, x) for x in n.input]
            n.output[:] = [mapping.get(x, x) for x in n.output]


def set_input_dims(model: Any, dims: dict[str, dict[int, Any]]) -> None:
    """Set input dims in place: an int fixes the size, a str names it, None leaves it unnamed."""
    for vi in model.graph.input:
        for axis, d in dims.get(vi.name, {}).items():
            _set_dim(vi.type.tensor_type.shape.dim[axis], d)


def set_output_dims(model: Any, dims: dict[str, dict[int, Any]]) -> None:
    for vi in model.graph.output:
        for axis, d in dims.get(vi.name, {}).items():
            _set_dim(vi.type.tensor_type.shape.dim[axis], d)


def _set_dim(dim: Any, d: Any) -> None:
    if isinstance(d, int):
        dim.dim_value = d
    elif isinstance(d, str):
        dim.dim_param = d
    else:
        dim.Clear()
