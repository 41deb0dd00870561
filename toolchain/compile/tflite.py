"""TFLite/LiteRT variants, converted straight from the PyTorch source with litert-torch.

No TensorFlow and no ONNX on this path: ``litert_torch.convert`` lowers a ``torch.export``
program to a ``.tflite`` flatbuffer. So this converter needs ``ctx.torch_module`` and refuses
an ``.onnx`` source.

- ``fp32``: ``litert_torch.convert(module, sample_kwargs=...)``.
- ``int8``: full-integer PT2E: ``torch.export`` -> ``prepare_pt2e`` with litert-torch's
  ``PT2EQuantizer`` (symmetric int8, per-channel weights by default) -> calibration samples run
  through the observed graph -> ``convert_pt2e`` -> ``litert_torch.convert(quant_config=...)``.
  When the PT2E graph misses the fidelity budget, the fewest culprit modules are kept in
  float (:mod:`toolchain.compile.tflite_fallback`).
  Input and output tensors of the result are int8 with their own scale/zero point; the
  runtime's TFLite backend quantizes/dequantizes so callers still pass and get floats.

Names: the module is wrapped so that it takes keyword inputs named after ``ctx.inputs`` and
returns a dict keyed by ``ctx.outputs``; litert-torch turns those into the ``serving_default``
signature names, which are checked after conversion.

Shapes: the result is static. litert-torch cannot export keyword inputs with dynamic dims, so
the model is converted at the example input's shapes, with a symbolic leading (batch) dim
fixed to 1 (edgeship verifies and serves batch-1 samples). Other symbolic dims (e.g. ``seq``)
keep the example's size. 64-bit integer inputs stay int64 (``enable_x64``) so the model takes
the same feeds as the other artifacts.

Invariant: nothing half-written (staging folder in ``out_dir``, moved into place when done);
torch, litert_torch and ai_edge_litert are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from runtime.spec import Engine, TensorSpec
from toolchain.compile.calibration import checked_calibration
from toolchain.compile.context import BuildContext, SampleSet
from toolchain.compile.staging import publish, staging
from toolchain.compile.tflite_fallback import ACTIVATION_OBSERVERS
from toolchain.errors import ConversionError, DataError, MissingExtraError, describe

MODEL_FILE = "model.tflite"
SIGNATURE = "serving_default"

_X64 = ("int64", "float64")


class TfliteConverter:
    """TFLite/LiteRT: ``model.tflite`` for fp32 and full int8 (PT2E)."""

    engine = Engine.TFLITE
    precisions = ("fp32", "int8")
    #: calibration methods the int8 variant honours (others are refused by :meth:`build`)
    calibration_methods = tuple(ACTIVATION_OBSERVERS)

    def __init__(self) -> None:
        self._recipes: dict[str, dict] = {}

    def recipe(self, ctx: BuildContext, *, precision: str) -> dict:
        """What :meth:`build` did for ``precision`` (the manifest's ``recipe``)."""
        if precision in self._recipes:
            return self._recipes[precision]
        return {"tool": "litert-torch", "weights": "float32", "shapes": "static (the example input, batch 1)"}

    def build(self, ctx: BuildContext, *, precision: str, out_dir: Path) -> Path:
        """Convert ``ctx.torch_module`` for ``precision``; return the path of ``model.tflite``.

        Raises:
            ValueError: ``precision`` is not one of :attr:`precisions`.
            MissingExtraError: litert-torch / torchao / ai-edge-litert is not installed.
            ConversionError: the source was not PyTorch, an op has no TFLite lowering (the
                message names it), int8 without calibration data or with an unsupported
                calibration method, or the signature lost the model's input/output names.
            DataError: calibration samples that do not match the model's inputs or the static
                shapes the TFLite model is converted at.
        """
        if precision not in self.precisions:
            raise ValueError(f"TFLite precision must be one of {self.precisions}, got {precision!r}")
        if ctx.torch_module is None or ctx.example_inputs is None:
            raise ConversionError(
                "tflite conversion needs the PyTorch source (litert-torch converts from torch.export, "
                f"not from ONNX); {ctx.model_name} was given as ONNX: compile it from a factory "
                "'file.py:build' or a .pt2 program to get a TFLite artifact"
            )
        examples = static_examples(ctx)
        calibration = _int8_calibration(ctx, examples) if precision == "int8" else None
        lt = _import("litert_torch", "litert-torch")
        wrapped = named_io(ctx.torch_module, [s.name for s in ctx.inputs], [s.name for s in ctx.outputs])
        enable_x64 = any(s.dtype in _X64 for s in (*ctx.inputs, *ctx.outputs))
        out_dir = Path(out_dir)
        with _quiet_litert(lt), staging(out_dir) as stage:
            try:
                if calibration is None:
                    lt.convert(wrapped.eval(), sample_kwargs=examples, enable_x64=enable_x64).export(str(stage / MODEL_FILE))
                else:
                    from toolchain.compile.tflite_fallback import accuracy_aware_pt2e

                    def write(module: Any, quant_config: Any, path: Path) -> None:
                        lt.convert(module, sample_kwargs=examples, quant_config=quant_config,
                                   enable_x64=enable_x64).export(str(path))

                    self._recipes[precision] = accuracy_aware_pt2e(
                        wrapped.eval(), ctx=ctx, examples=examples, calibration=calibration, write=write,
                        out=stage / MODEL_FILE)
            except (ConversionError, MissingExtraError, DataError):
                raise
            except Exception as e:  # torch.export / lowering / MLIR errors have no common base
                raise ConversionError(
                    f"litert-torch cannot convert {ctx.model_name} to tflite {precision}: {summarize_error(e)}"
                ) from e
            check_signature(stage / MODEL_FILE, ctx.inputs, ctx.outputs)
            publish(stage, out_dir, (MODEL_FILE,))
        return out_dir / MODEL_FILE


def named_io(inner: Any, input_names: Sequence[str], output_names: Sequence[str]) -> Any:
    """An ``nn.Module`` taking keyword inputs and returning a dict, both named by the user.

    ``named_io(inner, ["image"], ["logits"])(image=x)`` is ``{"logits": inner(x)}``;
    litert-torch uses those keys as the signature's tensor names.
    """
    import torch

    class NamedIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **feeds: Any) -> dict[str, Any]:
            out = self.inner(*[feeds[n] for n in input_names])
            if isinstance(out, dict):
                outs = list(out.values())
            else:
                outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if len(outs) != len(output_names):
                raise ConversionError(
                    f"the module returns {len(outs)} output(s) but the model declares "
                    f"{len(output_names)}: {list(output_names)}"
                )
            return dict(zip(output_names, outs))

    return NamedIO()


def static_examples(ctx: BuildContext) -> dict[str, Any]:
    """The example inputs as ``{name: tensor}`` at the static shapes TFLite is converted at.

    A symbolic leading dim (batch) is cut to 1; every other dim keeps the example's size.

    Raises:
        ConversionError: example inputs that are not tensors or do not match ``ctx.inputs``.
    """
    import torch

    examples = tuple(ctx.example_inputs or ())
    if len(examples) != len(ctx.inputs):
        raise ConversionError(
            f"{len(examples)} example input(s) for {len(ctx.inputs)} model input(s) "
            f"{[s.name for s in ctx.inputs]}; tflite conversion needs one tensor per input"
        )
    out: dict[str, Any] = {}
    for spec, x in zip(ctx.inputs, examples):
        if not isinstance(x, torch.Tensor):
            raise ConversionError(f"example input {spec.name!r} is a {type(x).__name__}, not a torch.Tensor")
        if x.ndim and _batch_is_symbolic(spec, ctx.dynamic_dims.get(spec.name, {})):
            x = x[:1]
        out[spec.name] = x
    return out


def _batch_is_symbolic(spec: TensorSpec, dyn: dict[int, str]) -> bool:
    return 0 in dyn or (len(spec.shape) > 0 and not isinstance(spec.shape[0], int))


def _int8_calibration(ctx: BuildContext, examples: dict[str, Any]) -> SampleSet:
    """The calibration set for int8, checked against the static shapes and the recipe."""
    want = {name: (tuple(x.shape), str(x.dtype).removeprefix("torch.")) for name, x in examples.items()}

    def check_static(i: int, feeds: Mapping[str, Any]) -> None:
        for name, arr in feeds.items():
            shape, dtype = want[name]
            if tuple(arr.shape) != shape or str(arr.dtype) != dtype:
                raise DataError(
                    f"calibration sample {i} input {name!r} is {arr.dtype}{list(arr.shape)}; the TFLite "
                    f"model is static and converted at {dtype}{list(shape)} (the example input, batch 1)"
                )

    return checked_calibration(ctx, what="tflite int8", methods=ACTIVATION_OBSERVERS, library="with PT2E",
                               scheme="full-integer post-training quantization", expected=want,
                               check_sample=check_static)


def check_signature(path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """The written model's ``serving_default`` signature must use the user's tensor names.

    Raises:
        ConversionError: names differ.
    """
    interp_mod = _import("ai_edge_litert.interpreter", "ai-edge-litert")
    sig = interp_mod.Interpreter(model_path=str(path)).get_signature_list().get(SIGNATURE, {})
    for kind, specs in (("inputs", inputs), ("outputs", outputs)):
        have, want = sorted(sig.get(kind, [])), sorted(s.name for s in specs)
        if have != want:
            raise ConversionError(f"tflite signature {SIGNATURE!r} has {kind} {have}, expected {want}")


def summarize_error(e: BaseException) -> str:
    """The op and the user's source line from a torch.export / litert-torch lowering error."""
    text = str(e)
    parts = []
    m = re.search(r"Lowering not found: (\S+)", text)
    if m:
        parts.append(f"op {m.group(1)} has no TFLite lowering")
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)(?:\n[ \t]+(\S.*))?', text)
    if frames:
        f, line, fn, code = frames[-1]
        parts.append(f"at {f}:{line} in {fn}" + (f": {code.strip()}" if code else ""))
    if not parts:
        parts.append(describe(e))
    return "; ".join(parts)


@contextlib.contextmanager
def _quiet_litert(lt: Any) -> Iterator[None]:
    """litert-torch prints a progress tree per step; the pipeline owns the console."""
    saved = lt.config.show_progress
    lt.config.show_progress = False
    try:
        yield
    finally:
        lt.config.show_progress = saved


def _import(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(package, "toolchain") from e
