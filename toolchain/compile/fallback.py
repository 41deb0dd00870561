"""Accuracy-aware int8: find the layers that break the fidelity budget, keep the fewest in float.

Every int8 converter (ORT, OpenVINO, TFLite) runs the same loop through :func:`accuracy_aware`:

1. quantize everything and judge the result on the validation inputs against the reference
   (:meth:`FidelityBudget.judge`: the artifact's gates, as verification will apply them);
2. when it misses, *localise*: the engine adapter captures the activations of the float and
   the int8 graph on a few validation inputs, and :func:`rank_layers` (pure) scores every
   quantizable layer by the error it adds on top of the error already in its inputs (the
   first divergence, then every further jump);
3. :func:`search` keeps the top-k layers in float, k = 1, 2, 4, ... until the budget is met,
   then bisects down to the fewest k that still meets it (a bounded number of trials);
4. the :class:`FallbackReport` says which layers fell back, the fidelity before and after,
   and what it cost in size and latency; converters put it in the manifest's ``recipe``.

Invariants: the pure parts (``rank_layers``, ``search``, ``relative_error``) do no I/O; the
loop never raises for a missed budget (the artifact's verification reports that), only for
a converter failure; with ``fallback`` off, only step 1 runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from toolchain.compile.samples import count, run_samples
from toolchain.compile.verify import compare

#: validation samples the per-layer error is measured on (localising needs few)
LOCALISE_SAMPLES = 8
#: bound on quantize-and-judge trials of one search (doubling + bisection)
MAX_TRIALS = 12


@dataclass(frozen=True)
class Judgement:
    passed: bool
    figures: dict[str, Any]  # verify.compare's figures (fidelity block, cosine_min, top1_agreement, ...)
    failures: tuple[str, ...]

    @property
    def headline(self) -> str:
        f = self.figures
        fid = f.get("fidelity") or {}
        if fid.get("value") is not None and fid.get("metric") != "cosine_min":
            return f"{fid['metric']} {fid['value']:.5g}, cos-min {f['cosine_min']:.5f}"
        return f"cos-min {f['cosine_min']:.5f}"


@dataclass(frozen=True)
class FidelityBudget:
    """What an artifact must reach: verification's checks (validation inputs in their stored
    layout, reference outputs, task, gates) for this artifact's precision."""

    checks: Any  # toolchain.compile.artifacts.Checks
    precision: Any  # toolchain.compile.verify.Precision
    output_names: tuple[str, ...]
    #: several samples per call, as verification runs a model whose inputs and outputs all
    #: have a dynamic batch (dynamic int8 picks its activation scales per call, so it matters)
    batchable: bool = True

    @property
    def samples(self) -> int:
        return count(self.checks.validation)

    def feeds(self, *, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """Model feeds of single samples (the first ``limit``)."""
        n = self.samples if limit is None else min(limit, self.samples)
        return [self.checks.layout.feeds(self.checks.validation, i, i + 1) for i in range(n)]

    def collect(self, run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]], *,
                batched: bool = True) -> dict[str, np.ndarray]:
        """Every validation sample through ``run`` (one call's feeds -> outputs), outputs by name
        with samples along axis 0, batched as verification batches them (``batched`` False:
        one sample per call, for a static batch-1 model)."""
        return run_samples(run, self.checks.validation, layout=self.checks.layout, names=list(self.output_names),
                           batched=batched and self.batchable)

    def judge(self, outputs: Mapping[str, np.ndarray],
              probe_outputs: Mapping[str, np.ndarray] | None = None) -> Judgement:
        """``outputs`` against the artifact's gates (the task's fidelity budget and the user's),
        and ``probe_outputs`` (at the second size of the dynamic dims) as verification judges them."""
        c = self.checks
        res = compare(reference=c.reference, candidate=outputs, output_names=list(self.output_names),
                      labels=c.labels, reference_accuracy=c.reference_accuracy, task=c.task,
                      precision=self.precision, gates=c.gates)
        failures = list(res["failures"])
        if probe_outputs is not None:
            v = compare(reference=c.probe_reference, candidate=probe_outputs, output_names=list(self.output_names),
                        labels=None, reference_accuracy=None, task=c.task, precision=self.precision,
                        gates=c.gates.for_probe(), probe_slack=True)
            failures += [f"at {c.probe.describe()}: {f}" for f in v["failures"]]
        return Judgement(passed=not failures, figures=res, failures=tuple(failures))

    def evaluate(self, run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]], *,
                 batched: bool = True) -> Judgement:
        """Run and judge a candidate. A model that keeps the dynamic dims (``batched``) is also
        judged at the probe size, as verification will judge it."""
        probe = None
        if batched and self.checks.probe is not None and self.checks.probe_reference is not None:
            probe = run_samples(run, self.checks.probe.arrays, layout=self.checks.layout,
                                names=list(self.output_names), batched=self.batchable)
        return self.judge(self.collect(run, batched=batched), probe)


@dataclass
class FallbackReport:
    """What the accuracy-aware loop did (JSON-ready through :meth:`to_json`)."""

    enabled: bool
    initial: Judgement | None = None
    final: Judgement | None = None
    layers: list[str] = field(default_factory=list)  # kept in float
    candidates: int = 0  # quantizable layers ranked
    ranking: list[tuple[str, float]] = field(default_factory=list)  # top of the ranking
    trials: int = 0
    size_bytes: tuple[int, int] | None = None  # (all int8, with fallback)
    latency_ms: tuple[float, float] | None = None  # p50 batch 1: (all int8, with fallback)
    note: str = ""
    seconds: float = 0.0

    @property
    def used(self) -> bool:
        return bool(self.layers)

    def to_json(self) -> dict[str, Any]:
        def j(x: Judgement | None) -> dict | None:
            if x is None:
                return None
            keep = ("cosine_min", "cosine_mean", "max_abs_error", "top1_agreement", "accuracy_drop_pts")
            fid = x.figures.get("fidelity") or {}
            return {"passed": x.passed, "fidelity": {"metric": fid.get("metric"), "value": fid.get("value")},
                    **{k: x.figures.get(k) for k in keep}, "failures": list(x.failures)}

        out = {"enabled": self.enabled, "layers": list(self.layers), "count": len(self.layers),
               "candidates": self.candidates, "trials": self.trials, "initial": j(self.initial),
               "final": j(self.final), "seconds": round(self.seconds, 1), "note": self.note,
               "ranking": [{"layer": n, "error_added": round(float(e), 6)} for n, e in self.ranking]}
        if self.size_bytes:
            out["size_bytes"] = {"int8": self.size_bytes[0], "with_fallback": self.size_bytes[1]}
        if self.latency_ms:
            a, b = self.latency_ms
            out["latency_ms_p50"] = {"int8": round(a, 3), "with_fallback": round(b, 3),
                                     "slowdown": round(b / a, 3) if a > 0 else None}
        return out

    def summary(self) -> str:
        """One line for the build output."""
        if not self.enabled:
            return "accuracy-aware fallback off (--no-fallback)"
        if self.initial is None:
            return "fallback: not run"
        if self.initial.passed:
            return f"int8 within budget ({self.initial.headline}); no layer kept in float"
        if not self.layers:
            return f"int8 misses the budget ({self.initial.headline}) and fallback found nothing to keep: {self.note}"
        shown = ", ".join(self.layers[:4]) + (f" +{len(self.layers) - 4} more" if len(self.layers) > 4 else "")
        verdict = "meets the budget" if self.final and self.final.passed else "STILL MISSES the budget"
        cost = ""
        if self.latency_ms:
            cost += f"; p50 batch 1, 1 thread {self.latency_ms[0]:.3g} -> {self.latency_ms[1]:.3g} ms"
        if self.size_bytes:
            from toolchain.console import human_bytes

            cost += f"; size {human_bytes(self.size_bytes[0])} -> {human_bytes(self.size_bytes[1])}"
        return (f"fallback: {len(self.layers)}/{self.candidates} layer(s) kept in float ({shown}): "
                f"{self.initial.headline} -> {self.final.headline if self.final else '?'}, {verdict}"
                f" after {self.trials} trial(s){cost}")


def relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """``||got - ref|| / ||ref||`` over all elements (0 for two zero tensors)."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    g = np.asarray(got, dtype=np.float64).ravel()
    if r.shape != g.shape:
        return float("nan")
    den = np.linalg.norm(r)
    num = np.linalg.norm(g - r)
    return float(num / den) if den > 0 else float(num > 0)


def rank_layers(
    layers: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    float_acts: Mapping[str, Sequence[np.ndarray]],
    quant_acts: Mapping[str, Sequence[np.ndarray]],
) -> list[tuple[str, float]]:
    """Quantizable layers by the error they add, largest first.

    Args:
        layers: ``(layer name, input tensor names, output tensor names)`` of each quantizable
            layer; tensors missing from the activations are skipped.
        float_acts / quant_acts: tensor name -> its value on each localising sample.

    A layer's score is the error of its outputs minus the largest error among its inputs
    (clipped at 0): the error that appears *at* this layer, not the one it inherits. An input
    with no counterpart in the int8 graph takes the error of its nearest measured ancestors.
    """
    err: dict[str, float] = {}

    def e(name: str) -> float | None:
        if name not in err:
            if name not in float_acts or name not in quant_acts:
                return None
            vals = [relative_error(a, b) for a, b in zip(float_acts[name], quant_acts[name])]
            vals = [v for v in vals if np.isfinite(v)]
            err[name] = float(np.mean(vals)) if vals else None
        return err[name]

    producer_inputs = {t: ins for _, ins, outs in layers for t in outs}

    def known(t: str, depth: int = 0) -> float | None:
        """The error of ``t``, or of its nearest measured ancestors when ``t`` itself has no
        counterpart in the int8 graph (a Conv whose output ORT renamed when it folded the ReLU)."""
        v = e(t)
        if v is not None or depth >= 4 or t not in producer_inputs:
            return v
        up = [x for x in (known(i, depth + 1) for i in producer_inputs[t]) if x is not None]
        return max(up) if up else None

    scores = []
    for name, ins, outs in layers:
        out_err = [x for x in (e(t) for t in outs) if x is not None]
        if not out_err:
            continue
        in_err = [x for x in (known(t) for t in ins) if x is not None]
        scores.append((name, max(0.0, max(out_err) - max(in_err, default=0.0))))
    return sorted(scores, key=lambda s: -s[1])


def search(ranked: Sequence[str], trial: Callable[[Sequence[str]], Judgement], *,
           max_trials: int = MAX_TRIALS) -> tuple[list[str], Judgement | None, int]:
    """The fewest top-ranked layers to keep in float so that ``trial`` passes.

    ``trial(excluded)`` quantizes with ``excluded`` kept in float and judges it. Doubling
    k = 1, 2, 4, ... until a pass (or every layer), then bisection between the last failing
    and the first passing k. Returns ``(layers, judgement of those layers, trials used)``;
    when nothing passes within the bound, the largest set tried and its judgement.
    """
    n = len(ranked)
    if n == 0:
        return [], None, 0
    trials = 0
    results: dict[int, Judgement] = {}

    def run(k: int) -> Judgement:
        nonlocal trials
        if k not in results:
            trials += 1
            results[k] = trial(list(ranked[:k]))
        return results[k]

    lo, k = 0, 1  # lo: largest k known to fail
    while True:
        if run(k).passed:
            break
        lo = k
        if k == n or trials >= max_trials:
            return list(ranked[:k]), results[k], trials
        k = min(n, 2 * k)
    hi = k
    while hi - lo > 1 and trials < max_trials:
        mid = (lo + hi) // 2
        if run(mid).passed:
            hi = mid
        else:
            lo = mid
    return list(ranked[:hi]), results[hi], trials


@dataclass(frozen=True)
class EngineAdapter:
    """What the loop needs from one engine (each converter builds one)."""

    quantize: Callable[[Sequence[str]], Any]  # excluded layers -> an int8 model
    runner: Callable[[Any], Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]]  # model -> run(feeds)
    localise: Callable[[Any, list[dict[str, np.ndarray]]], list[tuple[str, float]]]  # int8 model -> ranking
    size_bytes: Callable[[Any], int] | None = None
    latency_ms: Callable[[Any, dict[str, np.ndarray]], float] | None = None


def accuracy_aware(adapter: EngineAdapter, budget: FidelityBudget | None, *, enabled: bool,
                   say: Callable[[str], None] = lambda m: None, label: str = "int8",
                   batched: bool = True) -> tuple[Any, FallbackReport]:
    """Quantize, and when the result misses ``budget``, keep the fewest culprit layers in float.

    Returns ``(model, report)``. With no budget (nothing to judge against) or ``enabled``
    off, the fully quantized model is returned as is. ``batched`` False runs one sample per
    call (a static batch-1 model). Converter errors propagate.
    """
    t0 = time.perf_counter()
    model = adapter.quantize(())
    report = FallbackReport(enabled=enabled)
    if budget is None or not enabled:
        return model, report
    report.initial = budget.evaluate(adapter.runner(model), batched=batched)
    if report.initial.passed:
        report.final = report.initial
        report.seconds = time.perf_counter() - t0
        return model, report
    say(f"{label}: misses the budget ({'; '.join(report.initial.failures)}); localising the layers that cause it")
    ranking = adapter.localise(model, budget.feeds(limit=LOCALISE_SAMPLES))
    report.candidates = len(ranking)
    report.ranking = ranking[:10]
    ranked = [name for name, _ in ranking]
    if not ranked:
        report.note = "no quantized layer could be compared against the float graph"
        report.final = report.initial
        report.seconds = time.perf_counter() - t0
        return model, report
    models: dict[tuple[str, ...], Any] = {}

    def trial(excluded: Sequence[str]) -> Judgement:
        m = adapter.quantize(excluded)
        models[tuple(excluded)] = m
        j = budget.evaluate(adapter.runner(m), batched=batched)
        say(f"{label}: {len(excluded)} layer(s) in float -> {j.headline} ({'pass' if j.passed else 'miss'})")
        return j

    layers, final, report.trials = search(ranked, trial)
    if final is not None and final.passed and len(layers) == len(ranked):
        # every quantized layer in float is the float model under another name, not int8
        report.note = (f"only all {len(ranked)} quantized layers in float meet the budget (that is the float "
                       f"model, not int8); the int8 limit is at {', '.join(ranked[:3])}")
        report.final = report.initial
        report.seconds = time.perf_counter() - t0
        return model, report
    report.layers, report.final = layers, final
    fallback_model = models[tuple(layers)]
    if adapter.size_bytes:
        report.size_bytes = (adapter.size_bytes(model), adapter.size_bytes(fallback_model))
    if adapter.latency_ms:
        one = budget.feeds(limit=1)[0]
        report.latency_ms = (adapter.latency_ms(model, one), adapter.latency_ms(fallback_model, one))
    if final is not None and not final.passed:
        report.note = f"the budget is out of reach with {len(layers)} of {len(ranked)} layers in float"
    report.seconds = time.perf_counter() - t0
    return fallback_model, report


def p50_ms(run: Callable[[], Any], *, warmup: int = 3, runs: int = 15) -> float:
    """Median wall time of ``run()`` in ms (a cost estimate for the report, not a benchmark)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)
