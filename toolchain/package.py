"""`edgeship package`: turn one artifact of a build into a content-addressed model bundle.

Reads ``<build>/manifest.json`` (docs/design.md "Build directory"), checks the artifact's
files against their recorded hashes, runs the artifact once over (part of) the build's
validation data to take the golden set and the baseline statistics, and writes a
deterministic ``.tar`` named ``<name>-<release>-<sha256[:12]>.tar``. ``--capture-rules``
adds the capture rules the release ships with (:mod:`toolchain.capture_rules`).

Determinism: entries sorted, mtime 0, uid/gid 0, fixed modes, a golden.npz written with
fixed zip timestamps, model.json with sorted keys. Packaging the same build twice gives
the same bytes (and so the same sha256) on the same machine.

Nothing half-written: the tar is written to a temp file in ``--out`` and renamed into
place only when complete.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contracts.bundle import (
    GOLDEN_NPZ, MODEL_DIR, MODEL_JSON, Arch, BundleInfo, FileEntry, Precision, Requirements, Source,
    TensorStats, parse_version, schema_version_for,
)
from runtime.contracts.bundle.baseline import DriftBaseline, DriftThresholds
from runtime.contracts.capture.rules import CapturePolicy, describe_outputs
from runtime.fsutil import AtomicFile, current_umask, sha256_bytes, sha256_file
from runtime.spec import Engine, TensorSpec, deploy_precision_hint, is_dynamic

from . import capture_rules as cr
from .errors import BadInputError

#: how many validation samples the baseline statistics and the drift baseline are taken over
STATS_SAMPLES = 1024
#: architectures the engines publish wheels for; the default when --arch is not given
DEFAULT_ARCH = {
    Engine.ONNXRUNTIME: (Arch.X86_64.value, Arch.AARCH64.value),
    Engine.OPENVINO: (Arch.X86_64.value, Arch.AARCH64.value),
    Engine.TFLITE: (Arch.X86_64.value, Arch.AARCH64.value),
}


class PackageError(BadInputError):
    """The build or artifact cannot be packaged; the message says which file and why (exit 2)."""


@dataclass(frozen=True)
class PackageResult:
    path: Path
    sha256: str
    info: BundleInfo
    #: why the bundle carries no drift baseline (None when it carries one)
    drift_note: str | None = None


def package_build(
    build_dir: str | os.PathLike, *, artifact_id: str, version: str, release: int,
    out_dir: str | os.PathLike, latency_budget_ms: float | None = None, golden_samples: int = 8,
    arch: tuple[str, ...] | None = None, min_engine_version: str | None = None,
    drift_thresholds: DriftThresholds | None = None,
    capture_rules: str | os.PathLike | CapturePolicy | None = None, class_output: str | None = None,
) -> PackageResult:
    """Package one artifact of a build into a bundle in ``out_dir``.

    ``capture_rules``: the capture rules the release ships with, a rules file
    (:mod:`toolchain.capture_rules`) or a CapturePolicy; checked against the model's outputs
    before anything is written. A ``low_confidence``/``disagreement`` rule without an ``output``
    judges the bundle's class output (without a drift baseline to carry it, it is written into
    the rule; no class output decided: the rule is refused).

    ``class_output``: the output whose class mix the drift baseline holds (the bundle's class
    output); default: of the outputs the build verified as a classifier's, the first whose name
    or values say class scores (:func:`toolchain.compile.fidelity.pick_class_output`).

    Raises:
        PackageError: missing/invalid manifest, unknown or failed artifact, a file whose hash
            differs from the manifest, validation data that does not fit the model, or an
            invalid name/version/release (via BundleError).
        DriftBaselineError: the validation data or outputs hold NaN/Inf, or the classifier
            output is not [samples, classes]: the drift baseline would be broken.
        EngineNotInstalledError: the artifact's engine is not installed here (names the extra).
        CaptureRulesError: a bad rules file or a rule the model's outputs cannot serve.
    """
    capture, rules_where = capture_rules, "capture rules"
    if isinstance(capture_rules, (str, os.PathLike)):
        capture, rules_where = cr.load_rules_file(capture_rules), os.fspath(capture_rules)
    build = Path(build_dir)
    manifest_path = build / "manifest.json"
    manifest, manifest_raw = _read_manifest(build)
    art = _find_artifact(manifest, artifact_id, manifest_path)
    engine = Engine(art["engine"])
    art_dir = build / art["dir"]
    model_files = _checked_files(art_dir, art.get("files") or [], manifest_path, artifact_id)
    if art["model_file"] not in {p for p, _ in model_files}:
        raise PackageError(f"{manifest_path}: artifact {artifact_id!r} model_file {art['model_file']!r} "
                           f"is not in its files list")
    inputs = tuple(TensorSpec.from_json(s) for s in art["io"]["inputs"])
    outputs = tuple(TensorSpec.from_json(s) for s in art["io"]["outputs"])
    if class_output is not None:
        _check_class_output(class_output, outputs)
    validation = _load_validation(build, manifest, inputs)
    hint = deploy_precision_hint(engine, art["precision"])
    golden, in_stats, out_stats, ran = _run_artifact(art_dir / art["model_file"], engine, hint, inputs,
                                                     validation, golden_samples)
    golden_bytes = _npz_bytes(golden)
    ver = art.get("verification") or {}
    decided = class_output or _class_output(ver, ran[1])
    drift, drift_note = _drift(ran, decided, drift_thresholds)
    if capture is not None:  # a class rule without an output judges the class output just decided
        capture = cr.settle_class_rules(capture, outputs, where=rules_where, class_output=decided,
                                        carried=drift.classes.output if drift and drift.classes else "")
    tol = ver.get("tolerances") or {}
    files = [FileEntry(path=f"{MODEL_DIR}/{p}", sha256=sha256_file(art_dir / p),
                       bytes=(art_dir / p).stat().st_size) for p, _ in model_files]
    files.append(FileEntry(path=GOLDEN_NPZ, sha256=sha256_bytes(golden_bytes), bytes=len(golden_bytes)))
    info_json = {
        "schema_version": schema_version_for(capture=capture), "name": manifest["model"]["name"],
        "version": version, "release": release,
        "engine": engine.value, "precision": Precision(art["precision"]).value,
        "model_file": art["model_file"],
        "io": {"inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs]},
        "requirements": Requirements(
            engine=engine,
            min_engine_version=min_engine_version or _default_min_version(art, engine),
            arch=tuple(arch) if arch else DEFAULT_ARCH[engine],
            opset=_opset(art_dir / art["model_file"], manifest) if engine == Engine.ONNXRUNTIME else None,
        ).to_json(),
        "latency_budget_ms": latency_budget_ms,
        "tolerances": _tolerances(ver),
        "golden_calls": int(next(iter(golden.values())).shape[0]),
        "input_stats": {k: v.to_json() for k, v in in_stats.items()},
        "output_stats": {k: v.to_json() for k, v in out_stats.items()},
        "files": sorted((f.to_json() for f in files), key=lambda f: f["path"]),
        "source": Source(build_manifest_sha256=sha256_bytes(manifest_raw), artifact_id=artifact_id).to_json(),
        "drift": drift.to_json() if drift else None,
    }
    if capture is not None:
        info_json["capture"] = capture.to_json()
    info = BundleInfo.from_json(info_json, where=f"{artifact_id} model.json")
    members = {MODEL_JSON: info.to_bytes(), GOLDEN_NPZ: golden_bytes}
    for p, _ in model_files:
        members[f"{MODEL_DIR}/{p}"] = art_dir / p
    path, sha = _write_tar(Path(out_dir), info, members)
    return PackageResult(path=path, sha256=sha, info=info, drift_note=drift_note)


# ------------------------------------------------------------------------- inputs
def _read_manifest(build: Path) -> tuple[dict[str, Any], bytes]:
    from .compile.manifest import read_manifest
    from .errors import ManifestError

    try:
        return read_manifest(build)
    except ManifestError as e:
        raise PackageError(str(e)) from e


def _find_artifact(manifest: dict, artifact_id: str, path: Path) -> dict:
    arts = {a["id"]: a for a in manifest.get("artifacts", [])}
    if artifact_id not in arts:
        raise PackageError(f"{path}: no artifact {artifact_id!r}; the build has {sorted(arts)}")
    art = arts[artifact_id]
    if art.get("status") != "ok":
        raise PackageError(f"{path}: artifact {artifact_id!r} has status {art.get('status')!r} "
                           f"({art.get('error')}); only verified artifacts are packaged")
    ver = art.get("verification")
    if not ver or not ver.get("passed"):
        raise PackageError(f"{path}: artifact {artifact_id!r} has no passed verification")
    return art


def _checked_files(art_dir: Path, entries: list, manifest_path: Path, artifact_id: str) -> list[tuple[str, str]]:
    if not entries:
        raise PackageError(f"{manifest_path}: artifact {artifact_id!r} lists no files")
    out = []
    for e in entries:
        p = art_dir / e["path"]
        if not p.is_file():
            raise PackageError(f"{p}: listed in {manifest_path} but missing")
        if sha256_file(p) != e["sha256"]:
            raise PackageError(f"{p}: sha256 differs from {manifest_path}; the build was modified "
                               f"after compile, rebuild it")
        out.append((Path(e["path"]).as_posix(), e["sha256"]))
    return sorted(out)


def _load_validation(build: Path, manifest: dict, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    val = manifest.get("validation") or {}
    path = build / val.get("file", "data/validation.npz")
    if not path.is_file():
        raise PackageError(f"{path}: validation data missing; the golden set and statistics come from it")
    if val.get("sha256") and sha256_file(path) != val["sha256"]:
        raise PackageError(f"{path}: sha256 differs from the build manifest")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    out = {}
    for s in inputs:
        if s.name not in data:
            raise PackageError(f"{path}: no array for input {s.name!r} (has {sorted(data)})")
        a = data[s.name]
        if a.dtype != np.dtype(s.dtype):
            raise PackageError(f"{path}: input {s.name!r} is {a.dtype}, the model takes {s.dtype}")
        out[s.name] = a
    n = {a.shape[0] for a in out.values()}
    if len(n) != 1 or 0 in n:
        raise PackageError(f"{path}: inputs have different or zero sample counts {sorted(n)}")
    return out


# ------------------------------------------------------------------ running it
def _call_batch(inputs: tuple[TensorSpec, ...]) -> int:
    """Samples per call: the static batch dim when every input has one, else 1."""
    firsts = {s.shape[0] if s.shape else None for s in inputs}
    if len(firsts) == 1:
        (b,) = firsts
        if isinstance(b, int) and b > 0:
            return b
    return 1


def _run_artifact(model: Path, engine: Engine, hint: str | None, inputs, validation, golden_samples: int):
    """Golden outputs and IO statistics, run as the device will run it (same precision hint)."""
    from runtime import open_model

    b = _call_batch(inputs)
    n = next(iter(validation.values())).shape[0]
    calls = min(n, STATS_SAMPLES) // b
    if calls < 1 or golden_samples < 1:
        raise PackageError(f"validation data has {n} samples; need at least {b} per call and "
                           f"--golden-samples >= 1")
    k = min(golden_samples, calls)
    golden: dict[str, list] = {}
    outs: dict[str, list] = {}
    with open_model(model, engine=engine, precision_hint=hint) as sess:
        for i in range(calls):
            feeds = {name: a[i * b:(i + 1) * b] for name, a in validation.items()}
            res = sess.run(feeds)
            for name, v in res.items():
                outs.setdefault(name, []).append(v)
            if i < k:
                for name, v in feeds.items():
                    golden.setdefault(f"in:{name}", []).append(v)
                for name, v in res.items():
                    golden.setdefault(f"out:{name}", []).append(v)
    used = calls * b
    ran_in = {name: a[:used] for name, a in validation.items()}
    ran_out = {name: np.concatenate(v) for name, v in outs.items()}
    in_stats = {name: TensorStats.of(a) for name, a in ran_in.items() if _numeric(a)}
    out_stats = {name: TensorStats.of(a) for name, a in ran_out.items() if _numeric(a)}
    return {key: np.stack(v) for key, v in golden.items()}, in_stats, out_stats, (ran_in, ran_out)


def _class_output(ver: dict, outputs: dict[str, np.ndarray]) -> str | None:
    """The class output: of the outputs judged as a classifier's by the build's verification, the
    one :func:`~toolchain.compile.fidelity.pick_class_output` picks (None when there is none)."""
    from .compile.fidelity import pick_class_output

    per = ((ver.get("fidelity") or {}).get("per_output") or {})
    found = [name for name, o in per.items() if isinstance(o, dict) and o.get("task") == "classify"]
    return pick_class_output({n: outputs[n] for n in found if n in outputs})


def _check_class_output(name: str, outputs: tuple[TensorSpec, ...]) -> None:
    """``--class-output NAME`` must be a float [samples, classes] output with 2 or more classes."""
    spec = next((o for o in outputs if o.name == name), None)
    ok = spec is not None and len(spec.shape) == 2 and np.issubdtype(np.dtype(spec.dtype), np.floating) and (
        is_dynamic(spec.shape[1]) or spec.shape[1] >= 2)
    if not ok:
        what = "is not an output of the model" if spec is None else f"is {spec.describe()}"
        raise PackageError(f"--class-output {name!r} {what}; it must be a float [samples, classes] output with "
                           f"2 or more classes (outputs: {describe_outputs(outputs)})")


def _drift(ran, class_output: str | None, thresholds: DriftThresholds | None) -> tuple[DriftBaseline | None, str | None]:
    """The drift baseline of the validation data the artifact ran on, or (None, why not)."""
    from runtime.drift.reference import MIN_SAMPLES, build_baseline

    inputs, outputs = ran
    n = min(a.shape[0] for a in [*inputs.values(), *outputs.values()])
    if n < MIN_SAMPLES:
        return None, (f"no drift baseline: the build has {n} validation samples, a baseline needs "
                      f"{MIN_SAMPLES} (compile with more validation data)")
    if class_output is not None and np.asarray(outputs[class_output]).ndim != 2:
        class_output = None  # e.g. a per-pixel classifier: judged by its tensors only
    return build_baseline(inputs=inputs, outputs=outputs, class_output=class_output, thresholds=thresholds), None


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf" and a.size > 0


def _opset(model: Path, manifest: dict) -> int | None:
    try:
        import onnx
    except ImportError:
        return manifest.get("model", {}).get("opset")
    m = onnx.load(str(model), load_external_data=False)
    ops = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")]
    return max(ops) if ops else None


def _tolerances(ver: dict) -> dict[str, float]:
    """Golden tolerances from the build's verification. When the build set no elementwise atol
    (int8 gates on cosine), the artifact's measured max error against the reference is used:
    a device answer that far from the host's is as far as the verified artifact was."""
    tol = ver.get("tolerances") or {}
    atol = tol.get("atol")
    if atol is None:
        atol = ver.get("max_abs_error")
    cos = tol.get("min_cosine")
    return {"atol": float(atol if atol is not None else 1e-3),
            "min_cosine": float(cos if cos is not None else 0.999)}


def _default_min_version(art: dict, engine: Engine) -> str:
    """The major.minor of the engine the artifact was verified with: what is known to work."""
    v = parse_version(str(art.get("engine_version") or ""))
    if not v:
        raise PackageError(f"artifact {art['id']!r} records no engine_version; pass --min-engine-version")
    return ".".join(str(x) for x in (v + (0, 0))[:2]) + ".0"


# ------------------------------------------------------------------------ writing
def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz with fixed zip timestamps (np.savez stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            zi = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            with zf.open(zi, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)
    return buf.getvalue()


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, 0, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _write_tar(out_dir: Path, info: BundleInfo, members: dict[str, bytes | Path]) -> tuple[Path, str]:
    # 0644 less the umask: a bundle is meant to be copied around
    with AtomicFile(out_dir, mode=0o644 & ~current_umask(), prefix=".bundle.") as out:
        with tarfile.open(fileobj=out.file, mode="w:", format=tarfile.PAX_FORMAT) as tf:
            for name in sorted(members):
                src = members[name]
                if isinstance(src, bytes):
                    tf.addfile(_tarinfo(name, len(src)), io.BytesIO(src))
                else:
                    with open(src, "rb") as fh:
                        tf.addfile(_tarinfo(name, src.stat().st_size), fh)
        out.sync()
        sha = sha256_file(out.temp_path)
        final = out.commit(out_dir / f"{info.name}-{info.release}-{sha[:12]}.tar")
    return final, sha


# ---------------------------------------------------------------------------- CLI
def add_parser(sub) -> None:
    p = sub.add_parser("package", help="turn one artifact of a build into a model bundle (.tar)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("build_dir", metavar="BUILD_DIR")
    p.add_argument("--artifact", required=True, metavar="ID", help="artifact id from manifest.json")
    p.add_argument("--version", required=True, metavar="V", help="semantic version, e.g. 1.2.0")
    p.add_argument("--release", required=True, type=int, metavar="N",
                   help="monotonic release counter (devices refuse one at or below theirs)")
    p.add_argument("--latency-budget-ms", type=float, default=None,
                   help="p50 latency the device gate holds the model to (default: none)")
    p.add_argument("--golden-samples", type=int, default=8, metavar="K",
                   help="golden calls stored in the bundle (default 8)")
    p.add_argument("--arch", action="append", choices=[a.value for a in Arch],
                   help="CPU architecture the bundle is for (repeat; default x86_64 and aarch64)")
    p.add_argument("--min-engine-version", default=None,
                   help="oldest engine version allowed (default: major.minor of the verified one)")
    d = DriftThresholds()
    p.add_argument("--drift-psi", type=float, default=d.psi, metavar="X",
                   help=f"drift alarm: PSI of a tensor, class mix or confidence above X (default {d.psi})")
    p.add_argument("--drift-out-of-range", type=float, default=d.out_of_range_share, metavar="SHARE",
                   help=f"drift alarm: share of values outside the validation range above SHARE "
                        f"(default {d.out_of_range_share})")
    p.add_argument("--drift-nonfinite", type=float, default=d.nonfinite_share, metavar="SHARE",
                   help=f"drift alarm: share of NaN/Inf values above SHARE (default {d.nonfinite_share})")
    p.add_argument("--capture-rules", default=None, metavar="FILE",
                   help="capture rules the release ships with: TOML [[rules]] tables (the keys of agent.toml's "
                        "[[capture.rules]]) or JSON {\"rules\": [...]}; devices apply them only with [capture] "
                        "enabled (docs/capture.md)")
    p.add_argument("--class-output", default=None, metavar="NAME",
                   help="the output whose class mix the drift baseline holds and that capture rules without an "
                        "output judge (default: the classifier output the build verified, by name or values; "
                        "without a drift baseline it is written into those rules)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the bundle into")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    """Raises PackageError, BundleError (exit 2), EngineNotInstalledError (2), other runtime errors (1)."""
    res = package_build(args.build_dir, artifact_id=args.artifact, version=args.version,
                        release=args.release, out_dir=args.out,
                        latency_budget_ms=args.latency_budget_ms,
                        golden_samples=args.golden_samples,
                        arch=tuple(args.arch) if args.arch else None,
                        min_engine_version=args.min_engine_version,
                        drift_thresholds=_thresholds(args), capture_rules=args.capture_rules,
                        class_output=args.class_output)
    from .bundle_cli import result_json, summary

    print(json.dumps(result_json(res.path, res.sha256, res.info), indent=2) if args.json
          else summary(res.path, res.sha256, res.info, drift_note=res.drift_note))
    return 0


def _thresholds(args) -> DriftThresholds:
    from runtime.contracts.errors import BundleError

    t = DriftThresholds(psi=args.drift_psi, out_of_range_share=args.drift_out_of_range,
                        nonfinite_share=args.drift_nonfinite)
    try:
        t.check("--drift-psi/--drift-out-of-range/--drift-nonfinite")
    except BundleError as e:
        raise PackageError(str(e)) from e
    return t
