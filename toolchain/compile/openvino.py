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

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from runtime.spec import Engine
from toolchain.compile.calibration import checked_calibration
from toolchain.compile.context import BuildContext, QuantOptions, SampleSet
from toolchain.compile.staging import publish, staging
from toolchain.errors import ConversionError, MissingExtraError, describe

MODEL_XML = "model.xml"
MODEL_BIN = "model.bin"
#: rt_info key (under ``framework``, where ONNX metadata lands) naming the IR's precision
PRECISION_KEY = "edgeship.precision"

#: QuantOptions.calibration_method -> NNCF activation range estimator (attribute of
#: ``nncf.quantization.range_estimator.RangeEstimatorParametersSet``).
#: NNCF has no KL-divergence ("entropy") estimator, so that method is refused, not substituted.
_RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE"}
#: int8 candidates: NNCF's default fast bias correction, and none (see :func:`quantize_int8`)
_BIAS_CORRECTION = ("fast", "none")
#: calibration samples used to pick between the candidates
_SELECTION_SAMPLES = 32


class OpenVinoConverter:
    """OpenVINO IR: ``model.xml`` + ``model.bin`` for fp32, fp16 and int8."""

    engine = Engine.OPENVINO
    precisions = ("fp32", "fp16", "int8")
    #: calibration methods the int8 variant honours (others are refused by :meth:`build`)
    calibration_methods = tuple(_RANGE_ESTIMATORS)

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


def quantize_int8(model: Any, *, calibration: SampleSet, quant: QuantOptions, label: str = "model",
                  transformer: bool = False, ignored: Sequence[str] = (), bias_correction: Sequence[str] = _BIAS_CORRECTION) -> Any:
    """NNCF post-training quantization of an fp32 ``openvino.Model`` on ``calibration``.

    Two candidates are quantized: NNCF's default (fast bias correction) and the same recipe
    without bias correction. The one whose outputs stay closer to the fp32 model on the
    calibration samples is kept (bias correction is estimated from the same few samples and
    can overshoot: on the digits CNN it cut the worst-sample cosine from 0.9995 to 0.970).
    The choice and both errors are recorded in the IR's ``rt_info`` under ``edgeship``.
    ``quant.calibration_method`` must be a key of ``_RANGE_ESTIMATORS`` (checked by the caller).
    ``transformer`` sets ``model_type=TRANSFORMER``; ``ignored`` names operations NNCF leaves
    in float (``IgnoredScope(names=..., validate=False)``); ``bias_correction`` limits the
    candidates (the accuracy-aware loop's trials reuse the initial choice).

    Raises:
        MissingExtraError: nncf is not installed.
        ConversionError: NNCF failed on this model.
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            QuantizationParameters,
        )
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError as e:
        raise MissingExtraError("nncf", "toolchain") from e
    estimator = _RANGE_ESTIMATORS[quant.calibration_method]
    subset = max(1, min(len(calibration), quant.calibration_samples))
    samples = list(calibration.samples)[:subset]
    # NNCF hands each item to the compiled model, which takes a {input name: array} dict as is.
    dataset = nncf.Dataset(samples)
    extra: dict[str, Any] = {}
    if transformer:
        extra["model_type"] = nncf.ModelType.TRANSFORMER
    if ignored:
        extra["ignored_scope"] = nncf.IgnoredScope(names=list(ignored), validate=False)
    candidates = {}
    for bias_correction in bias_correction:
        params = AdvancedQuantizationParameters(
            activations_range_estimator_params=getattr(RangeEstimatorParametersSet, estimator),
            weights_quantization_params=QuantizationParameters(per_channel=quant.per_channel),
            disable_bias_correction=(bias_correction == "none"),
        )
        try:
            with _quiet_nncf():
                candidates[bias_correction] = nncf.quantize(
                    model.clone(), dataset, subset_size=subset, fast_bias_correction=True,
                    advanced_parameters=params, **extra,
                )
        except Exception as e:  # nncf raises plain RuntimeError/ValueError subclasses
            raise ConversionError(f"NNCF int8 quantization of {label} for OpenVINO failed: {describe(e)}") from e
    scored = {k: calibration_error(model, q, samples[:_SELECTION_SAMPLES]) for k, q in candidates.items()}
    if not all(math.isfinite(v) for v in scored.values()):
        raise ConversionError(f"NNCF int8 quantization of {label} for OpenVINO gives non-finite outputs on the "
                              f"calibration samples (errors {scored})")
    best = min(scored, key=lambda k: scored[k])
    chosen = candidates[best]
    info = {"tool": f"nncf {nncf.__version__}", "range_estimator": estimator, "per_channel": str(quant.per_channel),
            "calibration_samples": str(subset), "bias_correction": best,
            "model_type": "transformer" if transformer else "default", "ignored": str(len(ignored)),
            **{f"calibration_nmse_{k}": f"{v:.3e}" for k, v in scored.items()}}
    for key, value in info.items():
        chosen.set_rt_info(value, ["edgeship", "quantization", key])
    return chosen


def calibration_error(reference: Any, candidate: Any, samples: list[dict[str, Any]]) -> float:
    """Normalized squared error of ``candidate`` against ``reference`` over float outputs.

    Both run on CPU at f32 (not bf16) so the figure is the quantization error alone:
    ``sum((c - r)^2) / sum(r^2)`` over every float output of every sample.
    """
    import numpy as np
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    ref, cand = core.compile_model(reference, "CPU", cfg), core.compile_model(candidate, "CPU", cfg)
    num = den = 0.0
    for feeds in samples:
        r, c = ref(feeds), cand(feeds)
        for port in reference.outputs:
            name = port.get_any_name()
            if not np.issubdtype(np.asarray(r[name]).dtype, np.floating):
                continue
            rv, cv = np.asarray(r[name], dtype=np.float64), np.asarray(c[name], dtype=np.float64)
            num += float(((cv - rv) ** 2).sum())
            den += float((rv**2).sum())
    return num / den if den > 0 else num


def _has_attention(onnx_path: Path) -> bool:
    import onnx

    from toolchain.compile.onnxgraph import has_attention

    return has_attention(onnx.load(str(onnx_path), load_external_data=False))


def _int8_calibration(ctx: BuildContext) -> SampleSet:
    """The calibration set for int8, checked against the model's inputs and the recipe."""
    return checked_calibration(ctx, what="openvino int8", methods=_RANGE_ESTIMATORS, library="in NNCF",
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


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF draws rich progress bars on stdout; the pipeline owns the console."""
    import logging

    from nncf.common.logging import nncf_logger

    saved = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        nncf_logger.setLevel(saved)


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise MissingExtraError("openvino", "toolchain") from e
    return openvino
