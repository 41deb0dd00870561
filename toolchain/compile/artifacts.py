"""Build one artifact (engine x precision) into its own folder and verify it on its runtime.

The converter writes into ``<id>.partial/``; only after conversion and verification finish is
the folder renamed to ``<id>/``. A converter failure becomes an artifact with status
``failed`` and the reason; the other artifacts still build.

Verification runs the validation samples on the artifact's own engine and scores them with
the task's fidelity metric (:mod:`toolchain.compile.verify`). An artifact whose inputs keep
the model's dynamic dims is also run at the probe sizes (:mod:`toolchain.compile.dynamic`)
against the reference at the same sizes; ``verified_sizes`` records every size it ran at.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.spec import Engine, TensorSpec, deploy_precision_hint, is_dynamic
from toolchain import compat
from toolchain.compile.context import BuildContext
from toolchain.compile.dynamic import Probe
from toolchain.compile.fidelity import Task
from toolchain.compile.manifest import ArtifactStatus, files_of
from toolchain.compile.registry import load_converter
from toolchain.compile.samples import Layout, count, run_samples
from toolchain.compile.verify import Precision, UserGates, compare
from toolchain.errors import ToolchainError


def artifact_id(engine: Engine, precision: Precision) -> str:
    return f"{engine.value}-{precision.value}"


@dataclass(frozen=True)
class Checks:
    """What every artifact of a build is verified against."""

    validation: Mapping[str, np.ndarray]  # stored, samples along axis 0
    labels: np.ndarray | None
    reference: Mapping[str, np.ndarray]
    reference_accuracy: float | None
    task: Task
    gates: UserGates
    layout: Layout
    probe: Probe | None = None
    probe_reference: Mapping[str, np.ndarray] | None = None


def build_artifact(*, ctx: BuildContext, engine: Engine, precision: Precision, staging: Path, checks: Checks,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Convert + verify; returns the manifest entry (never raises for a per-target failure)."""
    aid = artifact_id(engine, precision)
    entry: dict[str, Any] = {"id": aid, "engine": engine.value, "precision": precision.value,
                             "status": ArtifactStatus.FAILED, "error": None, "dir": aid}
    partial = staging / f"{aid}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        conv = load_converter(engine)
        progress(f"{aid}: converting")
        ctx = _with_budget(ctx, aid, precision, checks, progress)
        with compat.quiet_torch():  # converter chatter (exporter logs, deprecation warnings)
            model_file = Path(conv.build(ctx, precision=precision.value, out_dir=partial))
        recipe_fn = getattr(conv, "recipe", None)
        entry["recipe"] = recipe_fn(ctx, precision=precision.value) if recipe_fn else {}
        for line in entry["recipe"].get("summary", ()):
            progress(f"{aid}: {line}")
        progress(f"{aid}: verifying on {engine.value} ({count(checks.validation)} samples)")
        ver, info, sizes = _verify(engine, precision, model_file, ctx, checks, aid, progress)
    except Exception as e:  # recorded on the artifact, with the type; the others still build
        entry["error"] = _reason(e)
        progress(f"{aid}: FAILED: {entry['error']}")
        shutil.rmtree(partial, ignore_errors=True)
        return entry
    final = staging / aid
    os.replace(partial, final)
    files = files_of(final)
    entry.update({
        "model_file": model_file.relative_to(partial).as_posix(),
        "files": files, "size_bytes": sum(f["bytes"] for f in files),
        "io": {"inputs": info["inputs"], "outputs": info["outputs"]},
        "engine_version": info["engine_version"],
        "executed_precision": info["executed_precision"],
        "verification": ver,
        "verified_sizes": sizes,
        "status": ArtifactStatus.OK if ver["passed"] else ArtifactStatus.GATE_FAILED,
    })
    if not ver["passed"]:
        entry["error"] = f"{aid}: " + "; ".join(ver["failures"])
        progress(f"{aid}: GATE FAILED: {'; '.join(ver['failures'])}")
    return entry


def _with_budget(ctx: BuildContext, aid: str, precision: Precision, checks: Checks, progress) -> BuildContext:
    """``ctx`` carrying what this artifact must reach (the accuracy-aware int8 loop judges by it)."""
    from dataclasses import replace

    from toolchain.compile.fallback import FidelityBudget

    budget = FidelityBudget(checks=checks, precision=precision, output_names=tuple(o.name for o in ctx.outputs),
                            batchable=checks.layout.batchable(ctx.inputs, ctx.outputs))
    stream = sys.stderr  # converters run under quiet_torch(), which captures sys.stderr

    def say(message: str) -> None:
        captured, sys.stderr = sys.stderr, stream
        try:
            progress(f"{aid}: {message}")
        finally:
            sys.stderr = captured

    return replace(ctx, budget=budget, progress=say)


class SizeError(ToolchainError):
    """An artifact that claims a dynamic dim fails at a second size of it."""


def _verify(engine, precision, model_file, ctx, checks: Checks, aid, progress) -> tuple[dict, dict, dict]:
    import runtime

    hint = deploy_precision_hint(engine, precision.value)
    names = [o.name for o in ctx.outputs]
    # verify exactly as the device will run it (OpenVINO float IR pinned to f32, not bf16 on AMX)
    with runtime.open_model(model_file, engine=engine.value, precision_hint=hint) as sess:
        info = sess.describe()
        run, art_inputs = _runner(sess, model_file, ctx.inputs, ctx.outputs)
        stats: dict = {}
        outs = run_samples(run, checks.validation, layout=checks.layout, names=names,
                           batched=checks.layout.batchable(art_inputs, _outputs_like(sess, ctx.outputs)), stats=stats)
        ver = compare(reference=checks.reference, candidate=outs, output_names=names, labels=checks.labels,
                      reference_accuracy=checks.reference_accuracy, task=checks.task, precision=precision,
                      gates=checks.gates)
        ver["sizes"] = [{"dims": _base_dims(checks, stats), "samples": count(checks.validation), "passed": ver["passed"]}]
        probe = checks.probe
        if probe is not None and _takes(art_inputs, probe):
            progress(f"{aid}: verifying at {probe.describe()} (dynamic dims)")
            ver["sizes"].append(_at_probe(run, checks, probe, art_inputs, _outputs_like(sess, ctx.outputs),
                                          names, precision, aid))
            if not ver["sizes"][-1]["passed"]:
                ver["failures"] = ver["failures"] + [f"at {probe.describe()}: {f}" for f in ver["sizes"][-1]["failures"]]
                ver["passed"] = False
                ver["fidelity"]["passed"] = False
    sizes: dict[str, list[int]] = {}
    for s in ver["sizes"]:
        for k, v in s["dims"].items():
            sizes.setdefault(k, [])
            if v not in sizes[k]:
                sizes[k].append(v)
    return ver, info, sizes


def _at_probe(run, checks: Checks, probe: Probe, art_inputs, art_outputs, names, precision, aid) -> dict:
    stats: dict = {}
    try:
        outs = run_samples(run, probe.arrays, layout=checks.layout, names=names,
                           batched=checks.layout.batchable(art_inputs, art_outputs), stats=stats)
    except Exception as e:  # the engine's own message, with the size it failed at
        raise SizeError(f"{aid} declares dynamic dims but fails at {probe.describe()} "
                        f"(verified at {', '.join(f'{k}={v}' for k, v in probe.base.items())}): "
                        f"{type(e).__name__}: {_first_line(e)}") from e
    v = compare(reference=checks.probe_reference, candidate=outs, output_names=names, labels=None,
                reference_accuracy=None, task=checks.task, precision=precision, gates=checks.gates.for_probe(),
                probe_slack=True)
    dims = {k: (stats["batch"] if _is_batch_key(probe, k) else n) for k, n in probe.sizes.items()}
    return {"dims": dims, "samples": count(probe.arrays), "passed": v["passed"], "failures": v["failures"],
            "fidelity": {"metric": v["fidelity"]["metric"], "value": v["fidelity"]["value"]}}


def _base_dims(checks: Checks, stats: dict) -> dict[str, int]:
    if checks.probe is None:
        return {}
    return {k: (stats["batch"] if _is_batch_key(checks.probe, k) else n) for k, n in checks.probe.base.items()}


def _is_batch_key(probe: Probe, key: str) -> bool:
    return any(d.batch for d in probe.changed if d.key == key)


def _takes(art_inputs: Sequence[TensorSpec], probe: Probe) -> bool:
    """True when the artifact keeps every probed non-batch dim dynamic (and has one at all)."""
    by_name = {s.name: s for s in art_inputs}
    dims = [d for d in probe.changed if not d.batch]
    if not dims:
        return any(is_dynamic(by_name[d.input].shape[d.axis]) for d in probe.changed if d.input in by_name)
    return all(d.input in by_name and is_dynamic(by_name[d.input].shape[d.axis]) for d in dims)


def _outputs_like(sess, outputs: Sequence[TensorSpec]) -> list[TensorSpec]:
    return list(sess.outputs) if len(sess.outputs) == len(outputs) else list(outputs)


def _runner(sess, model_file: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
    """``run(feeds by reference name) -> outputs by reference name`` and the artifact's input
    specs under the reference names. Converters that rename tensors are mapped by position."""
    by_name = {s.name: s for s in sess.inputs}
    if set(by_name) != {s.name for s in inputs}:
        if len(sess.inputs) != len(inputs):
            raise ToolchainError(f"{model_file.name}: artifact inputs {list(by_name)} do not match the model's {[s.name for s in inputs]}")
        rename = {ref.name: art.name for ref, art in zip(inputs, sess.inputs)}
    else:
        rename = {s.name: s.name for s in inputs}
    art_out = [s.name for s in sess.outputs]
    names = [o.name for o in outputs]
    out_map = dict(zip(names, names)) if set(art_out) == set(names) else dict(zip(names, art_out))

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = sess.run({rename[k]: np.asarray(v).astype(by_name[rename[k]].dtype, copy=False) for k, v in feeds.items()})
        return {n: res[out_map[n]] for n in names}

    specs = [TensorSpec(ref.name, by_name[rename[ref.name]].dtype, by_name[rename[ref.name]].shape) for ref in inputs]
    return run, specs


def _reason(e: BaseException) -> str:
    if isinstance(e, ToolchainError) or type(e).__module__.startswith("runtime"):
        return f"{type(e).__name__}: {e}"
    # an unexpected error inside a converter: keep the innermost frame so it can be found
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:400]
