"""What to measure: the targets of a build (or one model file) times the configuration matrix.

Pure apart from reading the manifest. Produces :class:`runtime.bench.CellSpec` values in a
shuffled order (seeded, recorded in the result) so no configuration always runs first.
"""

from __future__ import annotations

import enum
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.bench.errors import CellSpecError
from runtime.bench.spec import CellSpec, Preset, RunLength, check_count
from runtime.spec import Engine, deploy_precision_hint

from . import fidelity as fid
from .errors import BenchInputError


class OvPrecision(str, enum.Enum):
    """How OpenVINO artifacts are run.

    ``deploy``: the hint the agent serves with and compile verified with
    (:func:`runtime.spec.deploy_precision_hint`: float IR pinned to f32); ``auto``: no hint, the
    engine picks (bf16 on CPUs with AMX/avx512_bf16); ``f32``: forced f32 for every artifact;
    ``both``: deploy and auto as separate cells (one cell where they coincide).
    """

    DEPLOY = "deploy"
    AUTO = "auto"
    F32 = "f32"
    BOTH = "both"

    def hints(self, precision: str) -> tuple[str | None, ...]:
        deploy = deploy_precision_hint(Engine.OPENVINO, precision)
        if self is OvPrecision.DEPLOY:
            return (deploy,)
        if self is OvPrecision.AUTO:
            return (None,)
        if self is OvPrecision.F32:
            return ("f32",)
        return tuple(dict.fromkeys((deploy, None)))


@dataclass(frozen=True)
class Target:
    """One artifact to measure (JSON-ready through :meth:`to_json`)."""

    id: str
    engine: str
    precision: str
    model_path: str
    size_bytes: int | None
    status: str = "ok"  # manifest artifact status: ok | gate_failed
    accuracy: dict[str, Any] = field(default_factory=dict)  # the raw verification figures
    sha256: str | None = None
    fidelity: fid.Fidelity | None = None  # by the metric the model's task calls for

    @property
    def gate_failed(self) -> bool:
        return self.status == "gate_failed" or (self.fidelity is not None and self.fidelity.passed is False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "engine": self.engine, "precision": self.precision,
                "model_path": self.model_path, "size_bytes": self.size_bytes, "status": self.status,
                "gate_failed": self.gate_failed, "accuracy": dict(self.accuracy), "sha256": self.sha256,
                "fidelity": self.fidelity.to_json() if self.fidelity else None}


@dataclass(frozen=True)
class Source:
    kind: str  # "build" | "model_file"
    path: str
    targets: tuple[Target, ...]
    skipped: tuple[dict[str, Any], ...] = ()  # manifest artifacts that failed to build
    validation_npz: str | None = None
    validation_random: bool = False  # the build's validation set itself is random (manifest says so)
    model: dict[str, Any] = field(default_factory=dict)
    manifest_sha256: str | None = None
    task: str | None = None
    task_recorded: bool = False  # False: inferred from the IO spec (an older manifest)
    #: batch axis per input as the manifest declares it (io.inputs[].batch_axis; None: no batch axis)
    batch_axes: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """The matrix and the method. Units in names; validated on construction."""

    preset: Preset = Preset.QUICK
    batches: tuple[int, ...] = (1,)
    threads: tuple[int, ...] = (1,)
    streams: tuple[int, ...] = (1,)
    repeats: int | None = None  # None -> the preset's
    pin: str = "none"  # none | auto | comma list of CPU ids
    seed: int = 0
    ov_precision: OvPrecision = OvPrecision.DEPLOY
    max_accuracy_drop_pts: float | None = None
    run_length: RunLength | None = None  # overrides the preset (tests, custom runs)
    input_pool: int = 16
    cell_timeout_s: float | None = None
    engines: tuple[str, ...] | None = None  # only these engines
    artifacts: tuple[str, ...] | None = None  # only these artifact ids
    #: a full example shape per input (--input-shape), for inputs generated at random
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """The one validation of the matrix (the CLI flags); a bad value is bad input.

        Raises:
            BenchInputError: an empty list, or a batch/thread/stream count that is not >= 1.
        """
        for flag, values in (("--batch", self.batches), ("--threads", self.threads), ("--streams", self.streams)):
            if not values:
                raise BenchInputError(f"{flag}: give at least one value")
            for v in values:
                try:
                    check_count(flag[2:], v)
                except CellSpecError as e:
                    raise BenchInputError(f"{flag} {v!r}: {e}") from e
        if self.repeats is not None and (isinstance(self.repeats, bool) or not isinstance(self.repeats, int)
                                         or self.repeats < 1):
            raise BenchInputError(f"--repeats {self.repeats!r}: must be an integer >= 1")

    @property
    def length(self) -> RunLength:
        return self.run_length or self.preset.run_length()

    @property
    def trials(self) -> int:
        return self.repeats if self.repeats is not None else self.preset.repeats

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset.value, "batches": list(self.batches), "threads": list(self.threads),
                "streams": list(self.streams), "repeats": self.trials, "pin": self.pin, "seed": self.seed,
                "ov_precision": self.ov_precision.value, "max_accuracy_drop_pts": self.max_accuracy_drop_pts,
                "run_length": self.length.to_json(), "input_pool": self.input_pool,
                "engines": list(self.engines) if self.engines else None,
                "artifacts": list(self.artifacts) if self.artifacts else None,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()} or None}


def read_source(path: str | Path, *, engine: str | None = None) -> Source:
    """A build directory (has manifest.json) or a single model file.

    Raises:
        BenchInputError: path missing, manifest unreadable or of an unknown schema version.
    """
    p = Path(path)
    if p.is_dir():
        return _read_build(p)
    if not p.exists():
        raise BenchInputError(f"{p}: no such build directory or model file")
    return _read_model_file(p, engine)


def _read_build(d: Path) -> Source:
    from runtime.fsutil import sha256_bytes

    from ..compile.manifest import read_manifest
    from ..errors import ManifestError

    try:
        man, raw = read_manifest(d)
    except ManifestError as e:
        hint = " or pass a model file" if isinstance(e.__cause__, FileNotFoundError) else ""
        raise BenchInputError(f"{e}{hint}") from e

    task, recorded = fid.task_of(man)
    targets, skipped = [], []
    for a in man.get("artifacts", []):
        if a.get("status") not in ("ok", "gate_failed"):
            skipped.append({"id": a.get("id"), "status": a.get("status"), "error": a.get("error")})
            continue
        ver = a.get("verification") or {}
        acc = {k: ver.get(k) for k in ("accuracy", "accuracy_drop_pts", "top1_agreement",
                                       "cosine_min", "max_abs_error", "passed")}
        a_task, a_rec = fid.task_of(man, ver)
        main = next((f for f in a.get("files", []) if f.get("path") == a.get("model_file")), {})
        targets.append(Target(
            id=a["id"], engine=a["engine"], precision=a["precision"],
            model_path=str(d / a.get("dir", a["id"]) / a["model_file"]),
            size_bytes=a.get("size_bytes"), status=a["status"], accuracy=acc, sha256=main.get("sha256"),
            fidelity=fid.from_verification(ver, task=a_task)))
        recorded = recorded or a_rec
        task = a_task if a_rec else task
    val = man.get("validation") or {}
    vfile = d / val["file"] if val.get("file") else d / "data" / "validation.npz"
    return Source(kind="build", path=str(d), targets=tuple(targets), skipped=tuple(skipped),
                  validation_npz=str(vfile) if vfile.exists() else None, validation_random=bool(val.get("random")),
                  model=man.get("model") or {}, manifest_sha256=sha256_bytes(raw), task=task, task_recorded=recorded,
                  batch_axes=_manifest_batch_axes(man))


def _manifest_batch_axes(man: dict[str, Any]) -> dict[str, int | None]:
    """``{input: batch axis}`` from the manifest's ``io.inputs`` (older manifests have none)."""
    return {i["name"]: i["batch_axis"] for i in (man.get("io") or {}).get("inputs", [])
            if isinstance(i, dict) and "name" in i and "batch_axis" in i}


def _read_model_file(p: Path, engine: str | None) -> Source:
    from runtime import engine_for_file
    from runtime.errors import UnknownEngineError

    from .modelfile import file_precision

    try:
        eng = Engine(engine).value if engine else engine_for_file(p).value
    except ValueError:
        raise BenchInputError(f"unknown engine {engine!r}; choose one of {[e.value for e in Engine]}") from None
    except UnknownEngineError as e:
        raise BenchInputError(str(e)) from e
    precision = file_precision(p, eng)
    size = p.stat().st_size
    if p.suffix == ".xml" and p.with_suffix(".bin").exists():
        size += p.with_suffix(".bin").stat().st_size
    if p.with_name(p.name + ".data").exists():
        size += p.with_name(p.name + ".data").stat().st_size
    t = Target(id=f"{p.stem}-{eng}", engine=eng, precision=precision, model_path=str(p), size_bytes=size)
    return Source(kind="model_file", path=str(p), targets=(t,), model={"name": p.stem})


def _affinity(pin: str, threads: int) -> tuple[int, ...] | None:
    if pin == "none":
        return None
    if pin == "auto":
        allowed = sorted(os.sched_getaffinity(0))
        return tuple(allowed[:threads])
    return tuple(int(c) for c in pin.split(","))


def plan_cells(source: Source, config: BenchConfig, *, work_dir: Path) -> list[CellSpec]:
    """All cells (targets x batches x threads x streams x OV hints x trials), shuffled by seed.

    The configuration was validated when ``config`` was built; a cell's own problems (a
    missing file, a batch its model cannot take) show up when it runs.

    Raises:
        BenchInputError: ``--input-shape`` for a build whose validation data fixes the shapes.
    """
    if config.input_shapes and source.validation_npz:
        raise BenchInputError(f"--input-shape: {source.path} has validation data ({source.validation_npz}) and is "
                              "benchmarked at its shapes; drop --input-shape (it sizes generated inputs)")
    cells: list[CellSpec] = []
    targets = [t for t in source.targets
               if (not config.engines or t.engine in config.engines)
               and (not config.artifacts or t.id in config.artifacts)]
    for t in targets:
        hints = config.ov_precision.hints(t.precision) if t.engine == "openvino" else (None,)
        for b in config.batches:
            for th in config.threads:
                for st in config.streams:
                    for hint in hints:
                        key = config_key(t.id, batch=b, threads=th, streams=st, hint=hint)
                        for trial in range(config.trials):
                            cells.append(_cell(source, config, t, key, b, th, st, hint, trial, work_dir))
    random.Random(config.seed).shuffle(cells)
    return cells


def config_key(artifact_id: str, *, batch: int, threads: int, streams: int, hint: str | None) -> str:
    return f"{artifact_id}__b{batch}_t{threads}_s{streams}" + (f"_h{hint}" if hint else "")


def _cell(source, config, t, key, b, th, st, hint, trial, work_dir) -> CellSpec:
    cid = f"{key}_r{trial}"
    return CellSpec(
        # absolute paths: the cell process runs in another working directory
        cell_id=cid, model_path=os.path.abspath(t.model_path), engine=t.engine, threads=th, batch=b,
        streams=st, run_length=config.length, precision_hint=hint, cpu_affinity=_affinity(config.pin, th),
        inputs_npz=os.path.abspath(source.validation_npz) if source.validation_npz else None,
        input_seed=config.seed, input_pool=config.input_pool,
        samples_path=os.path.abspath(work_dir / "samples" / f"{cid}.npy"), trial=trial,
        batch_axes=dict(source.batch_axes) or None, input_shapes=dict(config.input_shapes) or None,
        # opaque to the cell, echoed back: what groups trials into one result cell
        meta={"key": key, "artifact_id": t.id, "precision": t.precision})
