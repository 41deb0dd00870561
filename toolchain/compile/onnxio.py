"""Small ONNX file helpers shared by the exporter and the converters.

- :func:`save_onnx` writes a model inline, or with its weights in one ``<file>.data`` beside it
  when they are large (the protobuf limit is 2 GiB), and returns every file written, so that
  "every file the model needs travels with it" is checkable.
- :func:`io_specs` reads input/output :class:`runtime.TensorSpec` from a graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
