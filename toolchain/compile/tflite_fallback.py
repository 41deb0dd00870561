"""Accuracy-aware int8 for TFLite: PT2E quantization, then the fewest culprit modules kept in float.

The engine adapter for :func:`toolchain.compile.fallback.accuracy_aware`, on the PT2E graph
(the graph litert-torch lowers to the ``.tflite``):

- quantize: ``prepare_pt2e`` with litert-torch's ``PT2EQuantizer`` (global int8 config,
  ``set_module_name(module, None)`` for every module kept in float) -> calibration ->
  ``convert_pt2e``;
- judge: the converted graph run in PyTorch (its quantize/dequantize pairs simulate the int8
  arithmetic) at batch 1, as the static TFLite model is verified;
- cost: when layers fell back, the all-int8 graph is lowered too and both ``.tflite`` files
  are timed (1 thread) and weighed;
- localise: the float graph and the converted graph run node by node (``torch.fx.Interpreter``)
  on a few validation inputs; every node fed by a dequantize is scored by the error it adds,
  and the score of a module is that of its worst node.

The chosen graph's ``.tflite`` is verified next in the pipeline. torch, torchao and litert_torch are imported inside functions only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolchain import compat
from toolchain.compile.context import BuildContext, QuantOptions, SampleSet
from toolchain.compile.fallback import EngineAdapter, accuracy_aware, p50_ms, rank_layers


#: QuantOptions.calibration_method -> torchao PT2E activation observer. Weights always use
#: (per-channel) min/max. There is no KL ("entropy") or percentile observer in PT2E; those
#: methods are refused rather than silently replaced.
ACTIVATION_OBSERVERS = {"minmax": "MinMaxObserver"}


def quantization_config(quant: QuantOptions) -> Any:
    """litert-torch's symmetric int8 config, with the activation observer ``quant`` asks for."""
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e import observer

    cfg = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=quant.per_channel)
    ctor = getattr(observer, ACTIVATION_OBSERVERS[quant.calibration_method]).with_args(eps=2**-12)
    act = dataclasses.replace(cfg.input_activation, observer_or_fake_quant_ctr=ctor)
    return dataclasses.replace(cfg, input_activation=act, output_activation=act)


def accuracy_aware_pt2e(module: Any, *, ctx: BuildContext, examples: dict[str, Any], calibration: SampleSet,
                        write: Callable[[Any, Any, Path], None], out: Path) -> dict:
    """Quantize the keyword-input ``module``, write the ``.tflite`` to ``out``; return the recipe.

    ``write(converted_module, quant_config, path)`` lowers a PT2E graph to a ``.tflite``. When
    layers fell back, the all-int8 graph is written too (beside ``out``, then removed) so that
    the size and latency cost are measured on TFLite itself, not on the simulated graph.
    """
    import torch
    from litert_torch.quantize.quant_config import QuantConfig

    program = torch.export.export(module, (), examples)
    feeders = module_feeders(program.module())
    quantizers: dict[tuple[str, ...], Any] = {}
    graphs: dict[tuple[str, ...], Any] = {}

    def quantize(excluded: Sequence[str]) -> Any:
        gm, quantizers[tuple(excluded)] = _quantize(program, calibration, ctx.quant, with_feeders(excluded, feeders))
        graphs[tuple(excluded)] = gm
        return gm

    adapter = EngineAdapter(quantize=quantize, runner=_runner, localise=lambda q, feeds: localise(program, q, feeds))
    say = ctx.progress or (lambda m: None)
    converted, report = accuracy_aware(adapter, ctx.budget, enabled=ctx.quant.fallback, say=say, label="int8", batched=False)
    write(converted, QuantConfig(pt2e_quantizer=quantizers[tuple(report.layers)]), out)
    if report.used:
        base = out.with_name("all-int8.tflite")
        write(graphs[()], QuantConfig(pt2e_quantizer=quantizers[()]), base)
        one = {k: v.numpy() for k, v in examples.items()}
        report.size_bytes = (base.stat().st_size, out.stat().st_size)
        report.latency_ms = (tflite_p50_ms(base, one), tflite_p50_ms(out, one))
        base.unlink()
    return {
        "tool": "litert-torch PT2E (torchao prepare_pt2e/convert_pt2e)", "scheme": "symmetric int8, full integer",
        "per_channel": ctx.quant.per_channel, "activation_observer": ctx.quant.calibration_method,
        "calibration_samples": max(1, min(len(calibration), ctx.quant.calibration_samples)),
        "float_modules": with_feeders(report.layers, feeders), "fallback": report.to_json(),
        "summary": [report.summary() + ("" if not report.used else
                                        " (layers judged on the PT2E graph; cost measured on the .tflite)")],
    }


def tflite_p50_ms(path: Path, feeds: dict[str, np.ndarray]) -> float:
    """p50 of one ``serving_default`` call, 1 thread (a cost estimate for the report)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    runner = interp.get_signature_runner("serving_default")
    details = runner.get_input_details()
    args = {}
    for name, arr in feeds.items():
        d = details[name]
        a = np.asarray(arr)
        if d["dtype"] in (np.int8, np.uint8) and np.issubdtype(a.dtype, np.floating):
            scale, zero = d["quantization"]
            a = np.clip(np.round(a / scale + zero), np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
        args[name] = a.astype(d["dtype"])
    return p50_ms(lambda: runner(**args))


def module_feeders(gm: Any) -> dict[str, list[str]]:
    """Module key -> the modules whose nodes produce its nodes' inputs.

    PT2E annotates a node's *output* with the node's own module: the quantize/dequantize pair
    in front of a GELU belongs to the Linear before it, so keeping the GELU's module float
    keeps its feeders float too (as ORT's QDQ fallback keeps a node's producers).
    """
    out: dict[str, list[str]] = {}
    for n in gm.graph.nodes:
        key = _module_key(n) if n.op == "call_function" else None
        if key is None:
            continue
        for a in n.all_input_nodes:
            k2 = _module_key(a) if a.op == "call_function" else None
            if k2 and k2 != key and k2 not in out.setdefault(key, []):
                out[key].append(k2)
    return out


def with_feeders(modules: Sequence[str], feeders: dict[str, list[str]]) -> list[str]:
    out = list(dict.fromkeys(modules))
    for m in modules:
        out += [f for f in feeders.get(m, ()) if f not in out]
    return out


def _quantize(program: Any, calibration: SampleSet, quant: QuantOptions, float_modules: Sequence[str]) -> tuple[Any, Any]:
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(quantization_config(quant))
    for key in float_modules:
        compat.pt2e_keep_float(quantizer, key)
    prepared = move_exported_model_to_eval(prepare_pt2e(program.module(), quantizer))
    n = max(1, min(len(calibration), quant.calibration_samples))
    with torch.no_grad():
        for feeds in list(calibration.samples)[:n]:
            prepared(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    converted = convert_pt2e(prepared, fold_quantize=False)
    # exported from an eval() module; only the nn.Module flag still says training (litert warns)
    torch.nn.Module.train(converted, False)
    return converted, quantizer


def _runner(gm: Any) -> Any:
    """``run(feeds) -> {output name: array}`` of the PT2E graph in PyTorch."""
    import torch

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = gm(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()})
        return {k: v.detach().numpy() for k, v in out.items()}

    return run


def _is_qdq(node: Any) -> bool:
    name = str(getattr(node, "target", ""))
    return node.op == "call_function" and ("quantize_per" in name or "dequantize_per" in name)


def _module_key(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack)[-1] if stack else None


def localise(program: Any, converted: Any, feeds: list[dict[str, np.ndarray]]) -> list[tuple[str, float]]:
    """Modules (``nn_module_stack`` keys) by the error their quantized nodes add, largest first."""
    float_gm = program.module()
    float_nodes = {n.name: n for n in float_gm.graph.nodes}
    layers, owner = [], {}
    for n in converted.graph.nodes:
        if n.op != "call_function" or _is_qdq(n) or n.name not in float_nodes:
            continue
        if not any(_is_qdq(a) for a in n.all_input_nodes):
            continue
        key = _module_key(float_nodes[n.name])
        if key is None:
            continue
        ins = [a.name for a in float_nodes[n.name].all_input_nodes if a.op == "call_function"]
        layers.append((n.name, ins, [n.name]))
        owner[n.name] = key
    wanted = {t for _, ins, outs in layers for t in (*ins, *outs)}
    if not wanted:
        return []
    acts = [_node_values(gm, wanted, feeds) for gm in (float_gm, converted)]
    by_module: dict[str, float] = {}
    for node, score in rank_layers(layers, acts[0], acts[1]):
        key = owner[node]
        by_module[key] = max(by_module.get(key, 0.0), score)
    return sorted(by_module.items(), key=lambda kv: -kv[1])


def _node_values(gm: Any, wanted: set[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    import torch

    got: dict[str, list[np.ndarray]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            r = super().run_node(n)
            if n.name in wanted and isinstance(r, torch.Tensor) and r.is_floating_point():
                got.setdefault(n.name, []).append(r.detach().numpy().copy())
            return r

    placeholders = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    with torch.no_grad():
        for f in feeds:
            args = [torch.from_numpy(np.ascontiguousarray(f[p])) if p in f else None for p in placeholders]
            if any(a is None for a in args):
                args = [torch.from_numpy(np.ascontiguousarray(v)) for v in f.values()]
            Recorder(gm).run(*args)
    return got
