"""Load a compile source: a Python factory, a saved ``torch.export`` program, or an ONNX file.

Factory contract (``path/to/file.py:fn`` or a built-in ``ref:<name>``)
----------------------------------------------------------------------
``fn(**kwargs)`` is called once (``kwargs`` from ``--arg key=value``) and returns either

* a :class:`FactoryResult` (preferred: typed, documented fields), or
* a tuple ``(module, example_inputs)`` or ``(module, example_inputs, options)`` where
  ``options`` is a dict with keys from :data:`FACTORY_OPTION_KEYS` (unknown keys are refused).

``example_inputs`` is a tuple of tensors in ``forward`` order (one tensor is accepted too).
``input_names``/``output_names`` name the ONNX inputs/outputs (they survive into every
artifact); ``dynamic_axes`` maps an input name to ``{axis: symbolic_name}`` (the same name on
two inputs means the same size, e.g. ``seq``). ``batch_axes`` maps an input name to its batch
axis, or None for an input without one (found from the dim names otherwise, see
:func:`runtime.spec.find_batch_axis`). ``calibration``/``validation`` are optional zero-argument
data callables (see :mod:`toolchain.compile.data`) used when the CLI gives no data.
``metadata`` is free-form and lands in the manifest; ``metadata["task"]`` names the task
(``classify``, ``embed``, ...) that picks the fidelity metric when ``--task`` is not given.

The module is put in eval mode. Nothing here imports torch at module level.
"""

from __future__ import annotations

import ast
import enum
import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from toolchain.errors import SourceError
from runtime.fsutil import sha256_file

FACTORY_OPTION_KEYS = frozenset(
    {"input_names", "output_names", "dynamic_axes", "dynamic_shapes", "batch_axes", "calibration", "validation",
     "metadata"}
)


class SourceKind(str, enum.Enum):
    FACTORY = "factory"
    PT2 = "pt2"
    ONNX = "onnx"


@dataclass(frozen=True, kw_only=True)
class _ModelOptions:
    """The optional, keyword-only fields a factory gives and a loaded source carries on."""

    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)
    calibration: Callable[[], Any] | None = None
    validation: Callable[[], Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FactoryResult(_ModelOptions):
    """What a model factory returns (see the module docstring)."""

    module: Any
    example_inputs: tuple


@dataclass(frozen=True)
class LoadedSource(_ModelOptions):
    """A loaded source, ready to export (or, for ONNX, to copy)."""

    kind: SourceKind
    spec: str
    name: str
    sha256: str
    module: Any | None = None  # nn.Module or torch.export.ExportedProgram
    example_inputs: tuple | None = None
    onnx_path: Path | None = None

    @property
    def is_torch(self) -> bool:
        return self.kind is not SourceKind.ONNX


def parse_factory_args(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> kwargs; values are Python literals when they parse, else strings.

    Raises: SourceError for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SourceError(f"--arg {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def load_source(spec: str, *, factory_kwargs: Mapping[str, Any] | None = None) -> LoadedSource:
    """Load ``spec`` (``file.py:fn``, ``ref:<name>``, ``model.pt2`` or ``model.onnx``).

    Raises:
        SourceError: the file/function is missing, the factory raised or returned the wrong thing.
    """
    kwargs = dict(factory_kwargs or {})
    if spec.startswith("ref:"):
        from toolchain.models import REFERENCE_MODELS

        name = spec[4:]
        if name not in REFERENCE_MODELS:
            raise SourceError(f"unknown reference model {spec!r}; choose one of {['ref:' + n for n in REFERENCE_MODELS]}")
        module, fn = REFERENCE_MODELS[name].split(":")
        file = Path(importlib.import_module(module).__file__)
        return _load_factory(spec, file, fn, kwargs, default_name=name)
    path_part, _, fn = spec.partition(":") if ".py:" in spec else (spec, "", "")
    path = Path(path_part)
    if path.suffix == ".py":
        if not fn:
            raise SourceError(f"{spec}: a Python source needs the factory function, e.g. {spec}:build")
        return _load_factory(spec, path, fn, kwargs, default_name=path.stem)
    if kwargs:
        raise SourceError(f"{spec}: --arg only applies to Python factories")
    if not path.is_file():
        raise SourceError(f"{spec}: file not found")
    if path.suffix == ".pt2":
        return _load_pt2(spec, path)
    if path.suffix == ".onnx":
        return LoadedSource(kind=SourceKind.ONNX, spec=spec, name=path.stem, sha256=_onnx_sha(path), onnx_path=path)
    raise SourceError(f"{spec}: unknown source type {path.suffix!r}; expected file.py:fn, ref:<name>, .pt2 or .onnx")


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise SourceError(f"{path}: factory file not found")
    mod_name = "edgeship_factory_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    # registered so that dataclasses/pickling inside the file can find their module
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.resolve().parent))  # let the factory import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise SourceError(f"{path}: importing the factory file failed: {type(e).__name__}: {e}"
                          f"{user_traceback(e)}") from e
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _load_factory(spec: str, path: Path, fn: str, kwargs: dict, *, default_name: str) -> LoadedSource:
    module = _import_file(path)
    factory = getattr(module, fn, None)
    if not callable(factory):
        raise SourceError(f"{path}: no callable {fn!r} in the factory file")
    try:
        res = factory(**kwargs)
    except Exception as e:
        raise SourceError(f"{spec}: the factory raised {type(e).__name__}: {e}{user_traceback(e)}") from e
    fr = _coerce_result(spec, res)
    _check_factory_result(spec, fr)
    fr.module.eval()
    return LoadedSource(
        kind=SourceKind.FACTORY, spec=spec, name=default_name,
        sha256=_factory_sha(path, fn, kwargs, fr.module), module=fr.module,
        example_inputs=fr.example_inputs, input_names=fr.input_names, output_names=fr.output_names,
        dynamic_axes={k: dict(v) for k, v in fr.dynamic_axes.items()}, batch_axes=dict(fr.batch_axes),
        calibration=fr.calibration,
        validation=fr.validation, metadata=dict(fr.metadata),
    )


def user_traceback(e: BaseException) -> str:
    """The frames of ``e``'s traceback that are the user's code (not edgeship, not installed
    packages), formatted as Python prints them; empty when there are none.

    ``--verbose`` prints the whole chain instead (see ``toolchain.compile.cli``).
    """
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if _is_user_file(f.filename)]
    if not frames:
        return ""
    return "\nTraceback (the factory's frames; --verbose shows all):\n" + "".join(traceback.format_list(frames)).rstrip()


def _is_user_file(filename: str) -> bool:
    here = Path(__file__).resolve().parents[2]  # the edgeship checkout / install root
    p = Path(filename)
    return not ("site-packages" in p.parts or "dist-packages" in p.parts or filename.startswith("<")
                or (p.is_absolute() and here in p.resolve().parents and p.resolve().parts[len(here.parts)] in
                    ("toolchain", "runtime", "device_agent")))


def _coerce_result(spec: str, res: Any) -> FactoryResult:
    if isinstance(res, FactoryResult):
        ex = res.example_inputs
        return res if isinstance(ex, tuple) else _replace_example(res, ex)
    if not isinstance(res, tuple) or len(res) not in (2, 3):
        raise SourceError(
            f"{spec}: the factory must return FactoryResult or (module, example_inputs[, options]); "
            f"got {type(res).__name__}"
        )
    module, example = res[0], res[1]
    opts = dict(res[2]) if len(res) == 3 and res[2] is not None else {}
    unknown = set(opts) - FACTORY_OPTION_KEYS
    if unknown:
        raise SourceError(f"{spec}: unknown factory option(s) {sorted(unknown)}; allowed: {sorted(FACTORY_OPTION_KEYS)}")
    axes = opts.get("dynamic_axes") or opts.get("dynamic_shapes") or {}
    return FactoryResult(
        module=module, example_inputs=example if isinstance(example, tuple) else (example,),
        input_names=_names(opts.get("input_names")), output_names=_names(opts.get("output_names")),
        dynamic_axes=axes, batch_axes=opts.get("batch_axes") or {}, calibration=opts.get("calibration"), validation=opts.get("validation"),
        metadata=opts.get("metadata") or {},
    )


def _replace_example(res: FactoryResult, ex: Any) -> FactoryResult:
    from dataclasses import replace

    return replace(res, example_inputs=tuple(ex) if isinstance(ex, list) else (ex,))


def _names(v: Any) -> tuple[str, ...] | None:
    return None if v is None else tuple(str(x) for x in v)


def _check_factory_result(spec: str, fr: FactoryResult) -> None:
    import torch

    if not isinstance(fr.module, torch.nn.Module):
        raise SourceError(f"{spec}: the factory's module is a {type(fr.module).__name__}, not a torch.nn.Module")
    for i, t in enumerate(fr.example_inputs):
        if not isinstance(t, torch.Tensor):
            raise SourceError(f"{spec}: example input {i} is a {type(t).__name__}; pass tensors")
    if fr.input_names is not None and len(fr.input_names) != len(fr.example_inputs):
        raise SourceError(
            f"{spec}: {len(fr.input_names)} input_names for {len(fr.example_inputs)} example inputs"
        )
    names = fr.input_names or ()
    for name, axes in fr.dynamic_axes.items():
        if names and name not in names:
            raise SourceError(f"{spec}: dynamic_axes names input {name!r}, inputs are {list(names)}")
        idx = names.index(name) if names else None
        for axis in axes:
            if idx is not None and not 0 <= int(axis) < fr.example_inputs[idx].dim():
                raise SourceError(f"{spec}: dynamic axis {axis} of {name!r} is out of range")


def _factory_sha(path: Path, fn: str, kwargs: dict, module: Any) -> str:
    """Hash of the factory code, its arguments and the module's weights (what defines the model)."""
    import torch

    h = hashlib.sha256()
    h.update(path.read_bytes())
    h.update(f"{fn}:{sorted(kwargs.items())!r}".encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _onnx_sha(path: Path) -> str:
    """Hash of an ONNX file plus any external-data files beside it that it references."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    h = hashlib.sha256(sha256_file(path).encode())
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise SourceError(f"{path}: not a readable ONNX model: {e}") from e
    locs = sorted({
        dict((e.key, e.value) for e in t.external_data)["location"]
        for t in _get_all_tensors(m) if uses_external_data(t)
    })
    for loc in locs:
        f = path.parent / loc
        if not f.is_file():
            raise SourceError(f"{path}: external data file {loc!r} is missing (it must sit beside the model)")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _load_pt2(spec: str, path: Path) -> LoadedSource:
    from toolchain import compat

    try:
        ep = compat.load_exported_program(str(path))
    except Exception as e:
        raise SourceError(f"{path}: torch.export.load failed: {type(e).__name__}: {e}") from e
    args, kwargs = compat.exported_program_example(ep)
    if kwargs:
        raise SourceError(f"{path}: programs with keyword example inputs are not supported; export with positional args")
    if not args:
        raise SourceError(f"{path}: the saved program has no example inputs; re-save it with torch.export (torch >= 2.5)")
    return LoadedSource(
        kind=SourceKind.PT2, spec=spec, name=path.stem, sha256=sha256_file(path), module=ep,
        example_inputs=tuple(args), input_names=tuple(compat.exported_program_input_names(ep)),
    )
