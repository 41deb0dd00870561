"""OpenVINO IR variants of the reference ONNX: fp32, fp16 (compressed weights) and int8 (NNCF PTQ).

Every variant starts from ``ctx.reference_onnx`` (``openvino.convert_model`` reads ONNX, and its
external ``.data`` file, directly), so input/output names and dynamic dims (batch, seq) are the
ones the ONNX export produced. The result is ``model.xml`` + ``model.bin`` in ``out_dir``.

- ``fp32``: ``save_model(compress_to_fp16=False)``: every weight stays float32.
- ``fp16``: ``save_model(compress_to_fp16=True)``: weights stored as float16 and decompressed
  to f32 by a ``Convert`` at load; activations still run at the device's inference precision.
- ``int8``: ``nncf.quantize`` (OpenVINO's standard post-training quantization) on the fp32
  model with ``ctx.calibration``: FakeQuantize on activations, int8 weight constants. NNCF's
  bias correction is kept only when it lowers the error on the calibration samples. A graph
  with attention is quantized with ``model_type=TRANSFORMER`` (NNCF's ignored patterns for
  attention, layer norms and the like). The calibration error (normalized squared error
  against the fp32 IR on the calibration samples) is recorded and printed. When the result
  misses the artifact's fidelity budget, the accuracy-aware loop keeps the fewest culprit
  layers in float through ``ignored_scope`` (:mod:`toolchain.compile.ov_fallback`).

Invariants: nothing half-written (files are built in a staging folder inside ``out_dir`` and
moved into place only when complete); openvino and nncf are imported inside functions only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runtime.spec import Engine
from toolchain.compile.calibration import checked_calibration
from toolchain.compile.ov_fallback import RANGE_ESTIMATORS
from toolchain.compile.context import BuildContext, SampleSet
from toolchain.compile.staging import publish, staging
from toolchain.errors import ConversionError, MissingExtraError

MODEL_XML = "model.xml"
MODEL_BIN = "model.bin"
#: rt_info key (under ``framework``, where ONNX metadata lands) naming the IR's precision
PRECISION_KEY = "edgeship.precision"

class OpenVinoConverter:
    """OpenVINO IR: ``model.xml`` + ``model.bin`` for fp32, fp16 and int8."""

    engine = Engine.OPENVINO
    precisions = ("fp32", "fp16", "int8")
    #: calibration methods the int8 variant honours (others are refused by :meth:`build`)
    calibration_methods = tuple(RANGE_ESTIMATORS)

    def __init__(self) -> None:
        self._recipes: dict[str, dict] = {}

    def recipe(self, ctx: BuildContext, *, precision: str) -> dict:
        """What :meth:`build` did for ``precision`` (the manifest's ``recipe``)."""
        if precision in self._recipes:
            return self._recipes[precision]
        return {"weights": "float16 (decompressed to f32 at load)" if precision == "fp16" else "float32",
                "frontend": "openvino.convert_model on the reference ONNX"}

    def build(self, ctx: BuildContext, *, precision: str, out_dir: Path) -> Path:
        """Write the IR for ``precision`` into ``out_dir``; return the path of ``model.xml``.

        Raises:
            ValueError: ``precision`` is not one of :attr:`precisions`.
            MissingExtraError: openvino (or nncf, for int8) is not installed.
            ConversionError: OpenVINO cannot read an op of the model (the message names the
                ops), int8 without calibration data, an unsupported calibration method, or
                a conversion that lost the model's input/output names.
            DataError: calibration samples whose input names do not match the model.
        """
        if precision not in self.precisions:
            raise ValueError(f"OpenVINO precision must be one of {self.precisions}, got {precision!r}")
        ov = _import_openvino()
        calibration = _int8_calibration(ctx) if precision == "int8" else None  # before any work
        # name the file as it is in the published build, not the staging dir that is gone afterwards
        model = read_onnx(ctx.reference_onnx, label=f"the reference ONNX of {ctx.model_name} "
                                                   f"(reference/{ctx.reference_onnx.name})")
        _check_names(model, ctx)
        if calibration is not None:
            from toolchain.compile.ov_fallback import accuracy_aware_int8

            model, self._recipes[precision] = accuracy_aware_int8(
                model, ctx=ctx, calibration=calibration, transformer=_has_attention(ctx.reference_onnx))
        # The reference ONNX's metadata says fp32; the IR must say what it is.
        model.set_rt_info(precision, ["framework", PRECISION_KEY])
        out_dir = Path(out_dir)
        with staging(out_dir) as stage:
            ov.save_model(model, str(stage / MODEL_XML), compress_to_fp16=(precision == "fp16"))
            publish(stage, out_dir, (MODEL_BIN, MODEL_XML))  # xml last: it names the bin
        return out_dir / MODEL_XML


def read_onnx(path: Path, *, label: str | None = None) -> Any:
    """``openvino.convert_model`` on an ONNX file -> ``openvino.Model``.

    Raises:
        ConversionError: OpenVINO has no conversion rule for some op, or the file is unreadable.
    """
    ov = _import_openvino()
    try:
        return ov.convert_model(str(path))
    except Exception as e:  # OpConversionFailure, GeneralFailure: C++ errors without a stable type
        raise ConversionError(f"OpenVINO cannot convert {label or path}: {_summarize_ov_error(e)}") from e


def _has_attention(onnx_path: Path) -> bool:
    import onnx

    from toolchain.compile.onnxgraph import has_attention

    return has_attention(onnx.load(str(onnx_path), load_external_data=False))


def _int8_calibration(ctx: BuildContext) -> SampleSet:
    """The calibration set for int8, checked against the model's inputs and the recipe."""
    return checked_calibration(ctx, what="openvino int8", methods=RANGE_ESTIMATORS, library="in NNCF",
                               scheme="post-training quantization", expected=[s.name for s in ctx.inputs])


def _check_names(model: Any, ctx: BuildContext) -> None:
    """The IR must carry the user's input/output names (runtime feeds by name)."""
    for kind, ports, specs in (("input", model.inputs, ctx.inputs), ("output", model.outputs, ctx.outputs)):
        have = [set(p.get_names()) for p in ports]
        missing = [s.name for s in specs if not any(s.name in names for names in have)]
        if missing:
            raise ConversionError(
                f"OpenVINO conversion of reference/{ctx.reference_onnx.name} lost {kind} name(s) {missing}; "
                f"the IR has {[sorted(n) for n in have]}"
            )


def _summarize_ov_error(e: BaseException) -> str:
    """The useful lines of an OpenVINO frontend error (it starts with C++ file/line noise)."""
    text = str(e)
    m = re.search(r"Summary:\s*(.*)", text, flags=re.S)
    body = m.group(1) if m else text
    lines = [ln.strip(" -") for ln in body.splitlines() if ln.strip(" -")]
    lines = [ln for ln in lines if not re.match(r"Check '.*' failed at ", ln)]
    return "; ".join(lines[:6]) or type(e).__name__


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise MissingExtraError("openvino", "toolchain") from e
    return openvino
