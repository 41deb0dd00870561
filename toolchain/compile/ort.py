"""ONNX Runtime variants of the reference ONNX: fp32, fp16, int8 static (QDQ), int8 dynamic.

Every artifact carries ``metadata_props["edgeship.precision"]`` (the runtime's ORT backend
reports it as the executed precision). Quantization scratch files (pre-processed model,
augmented calibration model) go to an explicit work directory, never the cwd.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

from runtime.spec import Engine
from toolchain import compat
from toolchain.compile.context import BuildContext, SampleSet
from toolchain.compile.onnxio import save_onnx, set_metadata, uses_external
from toolchain.compile.verify import Precision
from toolchain.errors import ConversionError, DataError

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: activations asymmetric uint8, weights symmetric int8 ("U8S8"): ORT's CPU recommendation
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"


class _Reader:
    """``CalibrationDataReader`` over a SampleSet (built lazily so onnxruntime loads late)."""

    def __new__(cls, samples: SampleSet):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it: Iterator = iter(samples.samples)
                self._n = len(samples)

            def get_next(self):
                return next(self._it, None)

            def __len__(self) -> int:
                return self._n

            def rewind(self) -> None:
                self._it = iter(samples.samples)

        return Reader()


class OrtConverter:
    engine = Engine.ONNXRUNTIME
    precisions = ("fp32", "fp16", "int8-static", "int8-dynamic")

    def recipe(self, ctx: BuildContext, *, precision: str) -> dict:
        if precision == "int8-static":
            return {"format": "QDQ", "calibration_method": ctx.quant.calibration_method,
                    "per_channel": ctx.quant.per_channel, "activation_type": ACTIVATION_TYPE,
                    "weight_type": WEIGHT_TYPE, "calibration_samples": min(len(ctx.calibration or ()), ctx.quant.calibration_samples)}
        if precision == "int8-dynamic":
            return {"weight_type": WEIGHT_TYPE, "per_channel": ctx.quant.per_channel}
        if precision == "fp16":
            return {"keep_io_types": True}
        return {}

    def build(self, ctx: BuildContext, *, precision: str, out_dir: Path) -> Path:
        """Write ``out_dir/model.onnx`` (+ ``.data`` when large). Raises ConversionError, DataError."""
        out = Path(out_dir) / "model.onnx"
        external = uses_external(ctx.reference_onnx)
        work = Path(tempfile.mkdtemp(prefix=f"ort-{precision}-", dir=ctx.work_dir))
        try:
            # every scratch file ORT makes (pre-processing, augmented calibration model) lands in work
            with compat.ort_temp_dir(work):
                model = self._convert(ctx, precision, work, external)
        except (ConversionError, DataError):
            raise
        except Exception as e:
            raise ConversionError(f"onnxruntime {precision}: {type(e).__name__}: {e}") from e
        set_metadata(model, {"edgeship.precision": _executed(precision)})
        save_onnx(model, out, external=external)
        return out


    def _convert(self, ctx: BuildContext, precision: str, work: Path, external: bool):
        if precision == "fp32":
            return _load(ctx.reference_onnx)
        if precision == "fp16":
            return _fp16(ctx.reference_onnx)
        if precision == "int8-static":
            return _int8_static(ctx, work, external)
        if precision == "int8-dynamic":
            return _int8_dynamic(ctx, work, external)
        raise ConversionError(f"onnxruntime: unknown precision {precision!r}; choose one of {self.precisions}")


def _executed(precision: str) -> str:
    return "int8" if precision.startswith("int8") else precision


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def _fp16(path: Path):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(_load(path), keep_io_types=True, disable_shape_infer=False)


def _preprocess(ctx: BuildContext, work: Path, external: bool) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "preprocessed.onnx"
    quant_pre_process(str(ctx.reference_onnx), str(pre), skip_symbolic_shape=False,
                      save_as_external_data=external, all_tensors_to_one_file=True,
                      external_data_location="preprocessed.onnx.data" if external else None)
    return pre


def _int8_static(ctx: BuildContext, work: Path, external: bool):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise DataError("onnxruntime int8-static needs calibration data (--calibration, or --random-calibration)")
    method = ctx.quant.calibration_method
    if method not in _METHODS:
        raise ConversionError(f"unknown calibration method {method!r}; choose one of {sorted(_METHODS)}")
    samples = ctx.calibration
    if len(samples) > ctx.quant.calibration_samples:
        samples = SampleSet(samples=list(samples.samples)[: ctx.quant.calibration_samples], source=samples.source)
    pre = _preprocess(ctx, work, external)
    out = work / "quantized.onnx"
    calibrate_method = getattr(CalibrationMethod, _METHODS[method])
    cache = _entropy_ranges(pre, samples, work, external) if method == "entropy" else None
    quantize_static(
        str(pre), str(out), _Reader(samples), quant_format=QuantFormat.QDQ,
        per_channel=ctx.quant.per_channel, activation_type=getattr(QuantType, ACTIVATION_TYPE),
        weight_type=getattr(QuantType, WEIGHT_TYPE), use_external_data_format=external,
        calibrate_method=calibrate_method, calibration_cache_path=cache,
    )
    return _load(out)


def _entropy_ranges(pre: Path, samples: SampleSet, work: Path, external: bool) -> Path:
    """KL (entropy) activation ranges from a 2048-bin histogram searched down to 128 bins.

    ``quantize_static`` builds its entropy calibrator with 128 bins searched at 128 quantized
    bins: one candidate, the full range, so its "entropy" model is byte-identical to MinMax
    (checked on the digits CNN). Its options cannot set the bins, so the ranges are computed
    here (2048/128 as in TensorRT's KL calibration) and handed over as a calibration cache.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrator = create_calibrator(
        pre, augmented_model_path=str(work / "entropy_augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy, use_external_data_format=external,
        extra_options={"num_bins": 2048, "num_quantized_bins": 128},
    )
    calibrator.collect_data(_Reader(samples))
    cache = work / "entropy_ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _int8_dynamic(ctx: BuildContext, work: Path, external: bool):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = _preprocess(ctx, work, external)
    out = work / "quantized.onnx"
    quantize_dynamic(str(pre), str(out), per_channel=ctx.quant.per_channel,
                     weight_type=getattr(QuantType, WEIGHT_TYPE), use_external_data_format=external)
    return _load(out)
