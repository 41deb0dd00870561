"""onnxruntime.quantization steps for :mod:`toolchain.compile.ort`: pre-processing, calibration
ranges, quantize with nodes kept in float, and the per-node error that localises int8 damage.

Pre-processing runs symbolic shape inference where it succeeds (transformers with dynamic
dims often defeat it: "Incomplete symbolic shape inference") and plain ONNX shape inference
where it does not; the recipe records which and why. ORT writes scratch files into the
current directory when symbolic inference gives up (``sym_shape_infer_temp.onnx`` plus a
``<uuid>.data`` of the full weights), so every call here runs inside :func:`scratch_in`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from toolchain.compile import onnxgraph
from toolchain.compile.context import SampleSet
from toolchain.compile.fallback import p50_ms, rank_layers
from toolchain.errors import ConversionError, describe

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: activations asymmetric uint8, weights symmetric int8 ("U8S8"): ORT's CPU recommendation
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"

#: what the dynamic recipe quantizes in a graph whose weights sit mostly in matrix products;
#: convolutions stay float there (ORT's ConvInteger has no fast CPU kernel: the PP-OCRv4 rec
#: with its convs dynamic ran slower than float). A conv net asked for int8-dynamic adds Conv.
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM", "Gather")


def dynamic_op_types(p: onnxgraph.GraphProfile) -> tuple[str, ...]:
    """Conv only for a conv net without attention (one asked for int8-dynamic by name)."""
    return DYNAMIC_OP_TYPES + (("Conv",) if not p.attention and p.conv_params >= p.matmul_params else ())

profile = onnxgraph.profile
choose = onnxgraph.int8_recipe


@contextlib.contextmanager
def scratch_in(work: Path) -> Iterator[None]:
    """Run with ``work`` as the cwd and as :data:`tempfile.tempdir` (ORT's scratch files land there).

    Changing the cwd is process-wide: the compile pipeline converts one artifact at a time.
    """
    saved_cwd, saved_tmp = os.getcwd(), tempfile.tempdir
    os.chdir(work)
    tempfile.tempdir = str(work)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tmp
        os.chdir(saved_cwd)


def load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def fp16(path: Path) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(load(path), keep_io_types=True, disable_shape_infer=False)


def preprocess(src: Path, work: Path, *, external: bool) -> tuple[Path, dict[str, Any]]:
    """``quant_pre_process`` with symbolic shape inference, else plain ONNX shape inference.

    Returns the pre-processed model and ``{"shape_inference": "symbolic"|"onnx", ...}``.

    Raises:
        ConversionError: both attempts failed (names both errors).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "preprocessed.onnx"
    src = _at_least_opset(src, work, external=external)

    def run(symbolic: bool) -> None:
        with scratch_in(work):
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=not symbolic,
                              save_as_external_data=external, all_tensors_to_one_file=True,
                              external_data_location="preprocessed.onnx.data" if external else None)

    try:
        run(symbolic=True)
        return pre, {"shape_inference": "symbolic"}
    except Exception as e:  # ORT raises a bare Exception for incomplete symbolic inference
        first = describe(e)
    try:
        run(symbolic=False)
    except Exception as e:
        raise ConversionError(f"onnxruntime quantization pre-processing failed: symbolic shape inference: "
                              f"{first}; ONNX shape inference: {describe(e)}") from e
    return pre, {"shape_inference": "onnx", "symbolic_shape_inference_error": first}


#: per-channel QuantizeLinear/DequantizeLinear (their ``axis``) need opset 13; ORT does not
#: raise an older model's opset itself and writes a graph it then refuses to load
#: (PP-OCRv4 det, opset 12: "DequantizeLinear ... invalid model")
MIN_OPSET = 13


def _at_least_opset(src: Path, work: Path, *, external: bool) -> Path:
    import onnx

    head = onnx.load(str(src), load_external_data=False)
    version = max((o.version for o in head.opset_import if o.domain in ("", "ai.onnx")), default=MIN_OPSET)
    if version >= MIN_OPSET:
        return src
    try:
        model = onnx.version_converter.convert_version(onnx.load(str(src)), MIN_OPSET)
    except Exception as e:
        raise ConversionError(f"onnxruntime int8 needs opset >= {MIN_OPSET} (per-channel Q/DQ); converting this "
                              f"opset-{version} model failed: {describe(e)}") from e
    out = work / f"opset{MIN_OPSET}.onnx"
    onnx.save_model(model, str(out), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{out.name}.data")
    return out


@dataclass(frozen=True)
class QuantPlan:
    mode: str  # "static" | "dynamic"
    source: Path  # the pre-processed float model
    work: Path
    external: bool
    per_channel: bool
    attention: bool
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES  # dynamic
    ranges: Path | None = None  # calibration cache (static)
    method: str = "minmax"  # the calibration method that made the cache
    samples: SampleSet | None = None


def with_ranges(plan: QuantPlan, samples: SampleSet, *, method: str) -> QuantPlan:
    """``plan`` with activation ranges computed once (every fallback trial reuses them).

    Entropy uses a 2048-bin histogram searched down to 128 bins: ``quantize_static``'s own
    entropy calibrator (128 bins searched at 128) has one candidate, the full range, so it is
    byte-identical to MinMax (checked on the digits CNN).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    extra = {"num_bins": 2048, "num_quantized_bins": 128} if method == "entropy" else {}
    with scratch_in(plan.work):
        calibrator = create_calibrator(
            plan.source, augmented_model_path=str(plan.work / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, METHODS[method]), use_external_data_format=plan.external,
            extra_options=extra,
        )
        calibrator.collect_data(_Reader(samples))
        cache = plan.work / f"ranges-{method}.json"
        save_tensors_data(calibrator.compute_data(), cache)
    return replace(plan, ranges=cache, samples=samples, method=method)


def quantize(plan: QuantPlan, excluded: Sequence[str]) -> Path:
    """Quantize ``plan.source`` keeping ``excluded`` nodes in float; returns the model file."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if plan.mode == "static":
        excluded = with_producers(plan.source, excluded)
    else:  # the dynamic quantizer turns a Gemm into <name>_MatMul + <name>_Add before it reads the list
        excluded = [x for name in excluded for x in (name, f"{name}_MatMul")]
    tag = hashlib.sha256("\n".join(sorted(excluded)).encode()).hexdigest()[:10]
    out = plan.work / f"int8-{plan.mode}-{len(excluded)}-{tag}.onnx"
    with scratch_in(plan.work):
        if plan.mode == "static":
            # attention products of two activations stay float: their ranges change per input
            extra = {"MatMulConstBOnly": True} if plan.attention else {}
            quantize_static(
                str(plan.source), str(out), _Reader(plan.samples), quant_format=QuantFormat.QDQ,
                per_channel=plan.per_channel, activation_type=getattr(QuantType, ACTIVATION_TYPE),
                weight_type=getattr(QuantType, WEIGHT_TYPE), use_external_data_format=plan.external,
                calibration_cache_path=plan.ranges, calibrate_method=getattr(CalibrationMethod, METHODS[plan.method]),
                nodes_to_exclude=list(excluded), extra_options=extra,
            )
        else:
            quantize_dynamic(str(plan.source), str(out), per_channel=plan.per_channel,
                             weight_type=getattr(QuantType, WEIGHT_TYPE), use_external_data_format=plan.external,
                             nodes_to_exclude=list(excluded), op_types_to_quantize=list(plan.op_types))
    return out


_QUANT_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
              "QLinearMatMul", "DequantizeLinear"}


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node of ``graph`` and of its subgraphs (If/Loop branches)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from _nodes(a.g)


def quantized_op_count(model: Any) -> int:
    return sum(n.op_type in _QUANT_OPS for n in _nodes(model.graph))


def op_summary(model: Any, top: int = 6) -> str:
    """``"Conv x6, If x1 (subgraph ops: ...)"``: what a graph holds, for error messages."""
    from collections import Counter

    main = Counter(n.op_type for n in model.graph.node)
    sub = Counter(n.op_type for n in _nodes(model.graph)) - main
    text = ", ".join(f"{k} x{v}" for k, v in main.most_common(top))
    return text + (f"; inside subgraphs: {', '.join(f'{k} x{v}' for k, v in sub.most_common(top))}" if sub else "")


def with_producers(model_path: Path, layers: Sequence[str]) -> list[str]:
    """``layers`` plus the nodes that produce their activation inputs.

    In QDQ a Q/DQ pair sits on a tensor, not on a node: it stays while the tensor's producer
    is quantized, so keeping a node in float keeps the quantizer off its producers too (the
    Add that applies an attention mask is what puts Q/DQ in front of the Softmax).
    """
    if not layers:
        return []
    graph = _graph(model_path)
    producer = {o: n.name for n in graph.node for o in n.output}
    inputs = {n.name: list(n.input) for n in graph.node}
    out = list(dict.fromkeys(layers))
    for name in layers:
        for t in inputs.get(name, ()):
            p = producer.get(t)
            if p and p not in out:
                out.append(p)
    return out


_GRAPHS: dict[str, Any] = {}


def _graph(path: Path) -> Any:
    """The graph of ``path`` without its weights (cached: every trial asks again)."""
    import onnx

    key = str(path)
    if key not in _GRAPHS:
        _GRAPHS.clear()
        _GRAPHS[key] = onnx.load(key, load_external_data=False).graph
    return _GRAPHS[key]


def _session(model: Any, threads: int = 1) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def runner(model: Any) -> Any:
    """``run(feeds) -> {output name: array}`` on an ORT session of ``model`` (all cores)."""
    sess = _session(model, threads=os.cpu_count() or 1)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds)))


def file_bytes(path: Path) -> int:
    p = Path(path)
    data = p.with_name(p.name + ".data")
    return p.stat().st_size + (data.stat().st_size if data.exists() else 0)


def latency_ms(path: Path, feeds: dict[str, np.ndarray]) -> float:
    sess = _session(path, threads=1)
    return p50_ms(lambda: sess.run(None, feeds))


def localise(float_model: Any, float_path: Path, qpath: Path, feeds: list[dict[str, np.ndarray]], *,
             mode: str, op_types: Sequence[str] = DYNAMIC_OP_TYPES) -> list[tuple[str, float]]:
    """Quantized nodes ranked by the error they add (int8 graph vs float graph, same tensors)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    qmodel = load(qpath)
    # every op the quantizer touches can be the culprit: a Q/DQ pair on an attention mask's
    # Unsqueeze (range [-3.4e38, 0]) wrecks a transformer as surely as a bad MatMul
    # (quantize_static quantizes the QLinear and the QDQ tables' op types)
    quantizable = set(QDQRegistry) | set(QLinearOpsRegistry) if mode == "static" else set(op_types) | {"Gemm"}
    inits = {t.name for t in float_model.graph.initializer}
    shared = onnxgraph.tensor_names(float_model) & onnxgraph.tensor_names(qmodel)
    layers = [(n.name, [i for i in n.input if i and i not in inits], list(n.output))
              for n in float_model.graph.node if n.name and n.op_type in quantizable]
    wanted = {t for _, ins, outs in layers for t in (*ins, *outs) if t in shared}
    if not wanted:
        return []
    acts = []
    for model in (float_model, qmodel):
        probe = onnxgraph.with_outputs(model, sorted(wanted))
        sess = _session(probe, threads=os.cpu_count() or 1)
        names = [o.name for o in sess.get_outputs()]
        got: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for f in feeds:
            for n, v in zip(names, sess.run(names, f)):
                got[n].append(np.asarray(v))
        acts.append(got)
    return rank_layers(layers, acts[0], acts[1])


class _Reader:
    """``CalibrationDataReader`` over a SampleSet (built lazily so onnxruntime loads late)."""

    def __new__(cls, samples: SampleSet | None):
        from onnxruntime.quantization import CalibrationDataReader

        items = list(samples.samples) if samples is not None else []

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(items)

            def get_next(self):
                return next(self._it, None)

            def __len__(self) -> int:
                return len(items)

            def rewind(self) -> None:
                self._it = iter(items)

        return Reader()
