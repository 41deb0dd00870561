"""OpenVINO int8: NNCF post-training quantization, then the fewest culprit layers kept in float.

:func:`quantize_int8` is the NNCF call (range estimator, bias-correction candidates, model
type, ignored scope) and records what it did in the IR's ``rt_info``. The engine adapter for :func:`toolchain.compile.fallback.accuracy_aware`:

- quantize: :func:`quantize_int8` with ``ignored_scope`` names;
- localise: the fp32 IR and the int8 IR run side by side on a few validation inputs with the
  outputs of every quantized operation (one whose input comes through a ``FakeQuantize`` or
  from int8 weights) and of its producers added as extra model outputs; an operation's score
  is the error it adds over its inputs;
- judge: the int8 IR compiled as verification compiles it (no precision hint).

openvino and nncf are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Sequence

import numpy as np

from toolchain.compile.context import BuildContext, QuantOptions, SampleSet
from toolchain.compile.fallback import EngineAdapter, accuracy_aware, p50_ms, rank_layers
from toolchain.errors import ConversionError, MissingExtraError, describe

#: QuantOptions.calibration_method -> NNCF activation range estimator (attribute of
#: ``nncf.quantization.range_estimator.RangeEstimatorParametersSet``).
#: NNCF has no KL-divergence ("entropy") estimator, so that method is refused, not substituted.
RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE"}
#: int8 candidates: NNCF's default fast bias correction, and none (see :func:`quantize_int8`)
_BIAS_CORRECTION = ("fast", "none")
#: calibration samples used to pick between the candidates
_SELECTION_SAMPLES = 32



def quantize_int8(model: Any, *, calibration: SampleSet, quant: QuantOptions, label: str = "model",
                  transformer: bool = False, ignored: Sequence[str] = (), bias_correction: Sequence[str] = _BIAS_CORRECTION) -> Any:
    """NNCF post-training quantization of an fp32 ``openvino.Model`` on ``calibration``.

    Two candidates are quantized: NNCF's default (fast bias correction) and the same recipe
    without bias correction. The one whose outputs stay closer to the fp32 model on the
    calibration samples is kept (bias correction is estimated from the same few samples and
    can overshoot: on the digits CNN it cut the worst-sample cosine from 0.9995 to 0.970).
    The choice and both errors are recorded in the IR's ``rt_info`` under ``edgeship``.
    ``quant.calibration_method`` must be a key of ``RANGE_ESTIMATORS`` (checked by the caller).
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
    estimator = RANGE_ESTIMATORS[quant.calibration_method]
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


_PROBE = "edgeship.probe:"
_LOW_BITS = {"i8", "u8", "i4", "u4"}


def accuracy_aware_int8(model: Any, *, ctx: BuildContext, calibration: SampleSet, transformer: bool) -> tuple[Any, dict]:
    """The int8 IR of the fp32 ``model`` and its recipe (the manifest's ``recipe``).

    Raises:
        MissingExtraError: nncf is not installed.
        ConversionError: NNCF failed on this model.
    """
    first = quantize_int8(model, calibration=calibration, quant=ctx.quant, label=ctx.model_name, transformer=transformer)
    info = rt_quantization_info(first)
    models: dict[tuple[str, ...], Any] = {(): first}

    def quantize(excluded: Sequence[str]) -> Any:
        key = tuple(excluded)
        if key not in models:
            models[key] = quantize_int8(model, calibration=calibration, quant=ctx.quant, label=ctx.model_name,
                                        transformer=transformer, ignored=key, bias_correction=(info["bias_correction"],))
        return models[key]

    adapter = EngineAdapter(quantize=quantize, runner=runner, localise=lambda q, feeds: localise(model, q, feeds),
                            size_bytes=constant_bytes, latency_ms=latency_ms)
    say = ctx.progress or (lambda m: None)
    chosen, report = accuracy_aware(adapter, ctx.budget, enabled=ctx.quant.fallback, say=say, label="int8")
    final_info = rt_quantization_info(chosen)
    errors = {k.removeprefix("calibration_nmse_"): float(v) for k, v in final_info.items() if k.startswith("calibration_nmse_")}
    chosen_err = errors.get(final_info["bias_correction"])
    recipe = {
        "tool": final_info.get("tool"), "model_type": "transformer" if transformer else "default",
        "chosen_because": "the graph has attention (MatMul -> Softmax -> MatMul)" if transformer else "no attention in the graph",
        "range_estimator": final_info.get("range_estimator"), "per_channel": ctx.quant.per_channel,
        "calibration_samples": int(final_info.get("calibration_samples", 0)), "bias_correction": final_info["bias_correction"],
        "calibration_error": {"metric": "normalized squared error vs the fp32 IR on calibration samples",
                              "value": chosen_err, "candidates": errors},
        "ignored_scope": list(report.layers), "fallback": report.to_json(),
    }
    pct = "?" if chosen_err is None else f"{100 * chosen_err:.3g}%"
    recipe["summary"] = [f"NNCF model_type={recipe['model_type']}, bias correction {recipe['bias_correction']}: "
                         f"calibration error {pct} (normalized squared error vs fp32 on the calibration samples)",
                         report.summary()]
    return chosen, recipe


def rt_quantization_info(model: Any) -> dict[str, str]:
    """The ``edgeship/quantization`` rt_info that :func:`quantize_int8` wrote."""
    keys = ("tool", "range_estimator", "per_channel", "calibration_samples", "bias_correction", "model_type",
            "calibration_nmse_fast", "calibration_nmse_none")
    out = {}
    for k in keys:
        if model.has_rt_info(["edgeship", "quantization", k]):
            out[k] = str(model.get_rt_info(["edgeship", "quantization", k]).astype(str))
    return out


def _compile(model: Any, *, f32: bool, threads: int | None = None) -> Any:
    import openvino as ov

    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"} if f32 else {}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(model, "CPU", cfg)


def runner(model: Any) -> Any:
    """``run(feeds) -> {output name: array}`` on the int8 IR compiled as verification compiles it."""
    compiled = _compile(model, f32=False)
    names = [p.get_any_name() for p in model.outputs]
    ports = [compiled.output(n) for n in names]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        r = compiled(feeds)
        return {n: np.asarray(r[p]) for n, p in zip(names, ports)}

    return run


def constant_bytes(model: Any) -> int:
    """Bytes of the IR's constants (its ``.bin``, within a few header bytes)."""
    return int(sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant"))


def latency_ms(model: Any, feeds: dict[str, np.ndarray]) -> float:
    compiled = _compile(model, f32=False, threads=1)
    request = compiled.create_infer_request()
    return p50_ms(lambda: request.infer(feeds))


def quantized_ops(qmodel: Any) -> list[Any]:
    """Operations of the int8 IR whose inputs are quantized (FakeQuantize or low-bit weights)."""
    out = []
    for op in qmodel.get_ops():
        if op.get_type_name() in ("FakeQuantize", "Constant", "Convert", "Result", "Parameter"):
            continue
        if any(_is_quantized(op.input_value(i).get_node()) for i in range(op.get_input_size())):
            out.append(op)
    return out


def _is_quantized(node: Any, depth: int = 0) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Constant":
        return node.get_element_type().get_type_name() in _LOW_BITS
    if depth < 3 and kind in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose") and node.get_input_size():
        return _is_quantized(node.input_value(0).get_node(), depth + 1)
    return False


def localise(fp32: Any, qmodel: Any, feeds: list[dict[str, np.ndarray]]) -> list[tuple[str, float]]:
    """Quantized operations by the error they add (int8 IR vs fp32 IR, same operations)."""
    float_ops = {op.get_friendly_name(): op for op in fp32.get_ops()}
    layers = []
    for op in quantized_ops(qmodel):
        name = op.get_friendly_name()
        fop = float_ops.get(name)
        if fop is None:
            continue
        ins = [f"{v.get_node().get_friendly_name()}:{v.get_index()}" for v in
               (fop.input_value(i) for i in range(fop.get_input_size()))
               if v.get_node().get_type_name() not in ("Constant", "Convert")]
        layers.append((name, ins, [f"{name}:0"]))
    wanted = sorted({t for _, ins, outs in layers for t in (*ins, *outs)})
    if not wanted:
        return []
    acts = [_capture(m, wanted, feeds) for m in (fp32, qmodel)]
    return rank_layers(layers, acts[0], acts[1])


def _capture(model: Any, keys: Sequence[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Values of ``"op:port"`` outputs on each feed (added as extra outputs of a clone)."""
    m = model.clone()
    ops = {op.get_friendly_name(): op for op in m.get_ops()}
    probes = {}
    for key in keys:
        name, _, idx = key.rpartition(":")
        op = ops.get(name)
        if op is None or int(idx) >= op.get_output_size() or op.get_type_name() == "Result":
            continue
        port = op.output(int(idx))
        if not port.get_element_type().is_real():
            continue
        port.get_tensor().add_names({_PROBE + key})
        probes[key] = port
    if not probes:
        return {}
    m.add_outputs(list(probes.values()))
    compiled = _compile(m, f32=True)
    got: dict[str, list[np.ndarray]] = {k: [] for k in probes}
    for f in feeds:
        r = compiled(f)
        for k in probes:
            got[k].append(np.asarray(r[compiled.output(_PROBE + k)]))
    return got
