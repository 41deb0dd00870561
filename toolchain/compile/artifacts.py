"""Build one artifact (engine x precision) into its own folder and verify it on its runtime.

The converter writes into ``<id>.partial/``; only after conversion and verification finish is
the folder renamed to ``<id>/``. A converter failure becomes an artifact with status
``failed`` and the reason; the other artifacts still build.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.spec import Engine, TensorSpec, deploy_precision_hint
from toolchain import compat
from toolchain.compile.context import BuildContext
from toolchain.compile.manifest import ArtifactStatus, files_of
from toolchain.compile.registry import load_converter
from toolchain.compile.verify import Precision, Tolerances, compare
from toolchain.errors import ToolchainError


def artifact_id(engine: Engine, precision: Precision) -> str:
    return f"{engine.value}-{precision.value}"


def build_artifact(
    *,
    ctx: BuildContext,
    engine: Engine,
    precision: Precision,
    staging: Path,
    validation: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    reference: Mapping[str, np.ndarray],
    reference_accuracy: float | None,
    tolerances: Tolerances,
    progress: Callable[[str], None],
) -> dict[str, Any]:
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
        ctx = _with_budget(ctx, aid, validation, reference, labels, reference_accuracy, tolerances, progress)
        with compat.quiet_torch():  # converter chatter (exporter logs, deprecation warnings)
            model_file = Path(conv.build(ctx, precision=precision.value, out_dir=partial))
        recipe_fn = getattr(conv, "recipe", None)
        entry["recipe"] = recipe_fn(ctx, precision=precision.value) if recipe_fn else {}
        for line in entry["recipe"].get("summary", ()):
            progress(f"{aid}: {line}")
        progress(f"{aid}: verifying on {engine.value} ({len(next(iter(validation.values())))} samples)")
        session_info, outputs = _run_artifact(engine, precision, model_file, ctx.inputs, ctx.outputs, validation)
        ver = compare(reference=reference, candidate=outputs, output_names=[o.name for o in ctx.outputs],
                      labels=labels, reference_accuracy=reference_accuracy, tolerances=tolerances)
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
        "io": {"inputs": session_info["inputs"], "outputs": session_info["outputs"]},
        "engine_version": session_info["engine_version"],
        "executed_precision": session_info["executed_precision"],
        "verification": ver,
        "status": ArtifactStatus.OK if ver["passed"] else ArtifactStatus.GATE_FAILED,
    })
    if not ver["passed"]:
        entry["error"] = f"{aid}: " + "; ".join(ver["failures"])
        progress(f"{aid}: GATE FAILED: {'; '.join(ver['failures'])}")
    return entry


def _with_budget(ctx, aid, validation, reference, labels, reference_accuracy, tolerances, progress) -> BuildContext:
    """``ctx`` carrying what this artifact must reach (the accuracy-aware int8 loop judges by it)."""
    from dataclasses import replace

    from toolchain.compile.fallback import FidelityBudget

    budget = FidelityBudget(validation=validation, reference=reference, output_names=tuple(o.name for o in ctx.outputs),
                            tolerances=tolerances, labels=labels, reference_accuracy=reference_accuracy,
                            batch=64 if all(s.shape and not isinstance(s.shape[0], int) for s in ctx.inputs) else 1)
    stream = sys.stderr  # converters run under quiet_torch(), which captures sys.stderr

    def say(message: str) -> None:
        captured, sys.stderr = sys.stderr, stream
        try:
            progress(f"{aid}: {message}")
        finally:
            sys.stderr = captured

    return replace(ctx, budget=budget, progress=say)


def _reason(e: BaseException) -> str:
    if isinstance(e, ToolchainError) or type(e).__module__.startswith("runtime"):
        return f"{type(e).__name__}: {e}"
    # an unexpected error inside a converter: keep the innermost frame so it can be found
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def _run_artifact(engine: Engine, precision: Precision, model_file: Path, inputs: Sequence[TensorSpec],
                  outputs: Sequence[TensorSpec], validation: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    import runtime

    # verify exactly as the device will run it (OpenVINO float IR pinned to f32, not bf16 on AMX)
    hint = deploy_precision_hint(engine, precision.value)
    with runtime.open_model(model_file, engine=engine.value, precision_hint=hint) as sess:
        info = sess.describe()
        step = 64 if all(s.shape and not isinstance(s.shape[0], int) for s in sess.inputs) else 1
        n = len(next(iter(validation.values())))
        by_name = {s.name: s for s in sess.inputs}
        if set(by_name) != {s.name for s in inputs}:
            if len(sess.inputs) != len(inputs):
                raise ToolchainError(f"{model_file.name}: artifact inputs {list(by_name)} do not match the model's {[s.name for s in inputs]}")
            # converters that rename inputs (positional mapping)
            rename = {ref.name: art.name for ref, art in zip(inputs, sess.inputs)}
        else:
            rename = {s.name: s.name for s in inputs}
        chunks: list[dict[str, np.ndarray]] = []
        for i in range(0, n, step):
            feeds = {}
            for ref_name, art_name in rename.items():
                a = validation[ref_name][i : i + step]
                feeds[art_name] = a.astype(by_name[art_name].dtype, copy=False)
            chunks.append(sess.run(feeds))
        art_out = [s.name for s in sess.outputs]
    names = [o.name for o in outputs]
    mapping = dict(zip(names, names)) if set(art_out) == set(names) else dict(zip(names, art_out))
    return info, {n_: np.concatenate([c[mapping[n_]] for c in chunks]) for n_ in names}
