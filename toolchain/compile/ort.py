"""ONNX Runtime variants of the reference ONNX: fp32, fp16, int8 (recipe chosen by the graph),
int8 static (QDQ) and int8 dynamic.

- ``int8``: the recipe that fits what the graph contains (:func:`onnxgraph.int8_recipe`):
  static QDQ for convolution nets, dynamic per-channel for transformer/linear-heavy graphs.
- ``int8-static`` / ``int8-dynamic``: that recipe whatever the graph.

Every int8 variant runs the accuracy-aware loop (:mod:`toolchain.compile.fallback`): when it
misses its fidelity budget, the layers that cause it are found (per-node error of the int8
graph against the float graph, :mod:`toolchain.compile.ort_quant`) and the fewest of them are
kept in float (``nodes_to_exclude``). The manifest's ``recipe`` says what was done, never ``{}``.

Within one build each int8 graph is built once: ``int8`` resolves to the static or the dynamic
recipe, and when ``int8-static``/``int8-dynamic`` of the same build already made that graph
(same reference, calibration, options and int8 budget), its quantized model and recipe are
reused (``chosen_because`` says why ``int8`` picked it). Pre-processing also runs once.

Every artifact carries ``metadata_props["edgeship.precision"]`` (the runtime's ORT backend
reports it as the executed precision). Every scratch file ORT writes (pre-processed and
augmented models, ``sym_shape_infer_temp.onnx`` and its ``<uuid>.data``) lands in the build's
work directory, which is removed with the build's staging directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from runtime.spec import Engine
from toolchain.compile import ort_quant as oq
from toolchain.compile.context import BuildContext, SampleSet
from toolchain.compile.fallback import EngineAdapter, accuracy_aware
from toolchain.compile.onnxio import save_onnx, set_metadata, uses_external
from toolchain.errors import ConversionError, DataError, describe

ACTIVATION_TYPE = oq.ACTIVATION_TYPE
WEIGHT_TYPE = oq.WEIGHT_TYPE
_MODES = {"int8-static": "static", "int8-dynamic": "dynamic"}


class OrtConverter:
    engine = Engine.ONNXRUNTIME
    precisions = ("fp32", "fp16", "int8", "int8-static", "int8-dynamic")

    def __init__(self) -> None:
        self._recipes: dict[str, dict] = {}

    def recipe(self, ctx: BuildContext, *, precision: str) -> dict:
        """What :meth:`build` did for ``precision`` (JSON-ready; the manifest's ``recipe``)."""
        if precision in self._recipes:
            return self._recipes[precision]
        if precision == "fp16":
            return {"weights": "float16", "keep_io_types": True}
        return {"weights": "float32", "graph": "the reference ONNX as exported"}

    def build(self, ctx: BuildContext, *, precision: str, out_dir: Path) -> Path:
        """Write ``out_dir/model.onnx`` (+ ``.data`` when large).

        Raises:
            ConversionError: ONNX Runtime cannot convert or quantize the model (the message
                names the step, and the ORT source line when ORT raised a bare assertion).
            DataError: int8-static without calibration data.
        """
        if precision not in self.precisions:
            raise ConversionError(f"onnxruntime: unknown precision {precision!r}; choose one of {self.precisions}")
        out = Path(out_dir) / "model.onnx"
        external = uses_external(ctx.reference_onnx)
        work = Path(tempfile.mkdtemp(prefix=f"ort-{precision}-", dir=ctx.work_dir or out_dir))
        try:
            with oq.scratch_in(work):
                model = self._convert(ctx, precision, work, external)
        except (ConversionError, DataError):
            raise
        except Exception as e:
            raise ConversionError(f"onnxruntime {precision}: {describe(e)}") from e
        set_metadata(model, {"edgeship.precision": "int8" if precision.startswith("int8") else precision})
        save_onnx(model, out, external=external)
        return out

    def _convert(self, ctx: BuildContext, precision: str, work: Path, external: bool) -> Any:
        if precision == "fp32":
            return oq.load(ctx.reference_onnx)
        if precision == "fp16":
            return oq.fp16(ctx.reference_onnx)
        model, recipe = build_int8(ctx, precision=precision, work=work, external=external)
        self._recipes[precision] = recipe
        return model


def build_int8(ctx: BuildContext, *, precision: str, work: Path, external: bool) -> tuple[Any, dict]:
    """The int8 model for ``precision`` and its recipe (accuracy-aware when ``ctx.budget`` is set).

    Raises:
        DataError: a static recipe without calibration data.
        ConversionError: pre-processing or quantization failed.
    """
    pre, shape_info, prof = _preprocessed(ctx, work, external)
    if precision in _MODES:
        mode, why = _MODES[precision], f"{precision} was asked for"
    else:
        mode, why = oq.choose(prof)
    say = ctx.progress or (lambda m: None)
    done = ctx.shared.get(("ort-int8", mode))
    if done is not None:  # int8 resolved to the recipe another precision of this build has built
        qpath, recipe, built_as = done
        say(f"reusing the int8 {mode} graph built for {built_as} (same recipe, data and int8 budget)")
        recipe = {**recipe, "chosen_because": why, "summary": [f"recipe {mode} ({why})", *recipe["summary"][1:]]}
        return oq.load(qpath), recipe
    pre_model = oq.load(pre)
    recipe: dict[str, Any] = {"mode": mode, "chosen_because": why, **shape_info, "graph": prof.to_json(),
                              "per_channel": ctx.quant.per_channel, "weight_type": WEIGHT_TYPE}
    plan = oq.QuantPlan(mode=mode, source=pre, work=work, external=external, per_channel=ctx.quant.per_channel,
                        attention=prof.attention, op_types=oq.dynamic_op_types(prof))
    if mode == "static":
        samples = _static_samples(ctx)
        plan = oq.with_ranges(plan, samples, method=ctx.quant.calibration_method)
        recipe.update({"format": "QDQ", "activation_type": ACTIVATION_TYPE,
                       "calibration_method": ctx.quant.calibration_method, "calibration_samples": len(samples)})
    else:
        recipe.update({"format": "QOperator (MatMulInteger)", "op_types": list(plan.op_types),
                       "activations": "quantized per call at run time"})
    adapter = EngineAdapter(
        quantize=lambda excluded: oq.quantize(plan, excluded),
        runner=oq.runner,
        localise=lambda qpath, feeds: oq.localise(pre_model, pre, qpath, feeds, mode=mode, op_types=plan.op_types),
        size_bytes=oq.file_bytes,
        latency_ms=oq.latency_ms,
    )
    qpath, report = accuracy_aware(adapter, ctx.budget, enabled=ctx.quant.fallback, say=say, label=precision)
    recipe["nodes_to_exclude"] = oq.with_producers(pre, report.layers) if mode == "static" else list(report.layers)
    quantized = oq.load(qpath)
    if oq.quantized_op_count(quantized) == 0:
        raise ConversionError(_nothing_quantized(ctx, precision, mode, report, oq.op_summary(pre_model)))
    recipe["fallback"] = report.to_json()
    recipe["summary"] = [f"recipe {mode} ({why})", report.summary()]
    if ctx.work_dir is not None:  # qpath lives in the pipeline's scratch, which outlives this artifact
        ctx.shared[("ort-int8", mode)] = (Path(qpath), recipe, precision)
    return quantized, recipe


def _preprocessed(ctx: BuildContext, work: Path, external: bool) -> tuple[Path, dict, Any]:
    """The pre-processed reference, its shape-inference note and its graph profile; once per
    build (every int8 precision starts from it; ``int8`` reads the profile to pick its recipe)."""
    key = ("ort-preprocessed", str(ctx.reference_onnx))
    if key in ctx.shared:
        return ctx.shared[key]
    pre, shape_info = oq.preprocess(ctx.reference_onnx, work, external=external)
    out = (pre, shape_info, oq.profile(oq.load(pre)))
    if ctx.work_dir is not None:  # the pipeline's scratch, which outlives this artifact
        ctx.shared[key] = out
    return out


def _nothing_quantized(ctx: BuildContext, precision: str, mode: str, report: Any, ops: str) -> str:
    """Why an int8 result holds no quantized op: the quantizer left it all, or the fallback did."""
    head = f"onnxruntime {precision}: no usable int8 for {ctx.model_name}: "
    if report.used:
        first = "; ".join(report.initial.failures[:1]) if report.initial else ""
        return (head + f"the accuracy-aware fallback met the budget only with {len(report.layers)} of "
                f"{report.candidates} layers in float, which leaves no op quantized (fully quantized: "
                f"{first or 'missed the budget'}). The int8 graph is the float model; to judge the quantized "
                "graph as it is, pass --no-fallback, or widen --fidelity-budget")
    return (head + f"the {mode} quantizer quantized nothing (no "
            f"{'Q/DQ' if mode == 'static' else 'MatMulInteger/ConvInteger'} op in the result; ops {ops}): "
            "an int8 artifact would be the float model")


def _static_samples(ctx: BuildContext) -> SampleSet:
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise DataError("onnxruntime int8 (static QDQ) needs calibration data (--calibration, or --random-calibration)")
    method = ctx.quant.calibration_method
    if method not in oq.METHODS:
        raise ConversionError(f"unknown calibration method {method!r}; choose one of {sorted(oq.METHODS)}")
    samples = ctx.calibration
    if len(samples) > ctx.quant.calibration_samples:
        samples = SampleSet(samples=list(samples.samples)[: ctx.quant.calibration_samples], source=samples.source)
    return samples
