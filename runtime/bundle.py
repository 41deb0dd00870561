"""The model bundle's ``model.json`` schema, and the pure checks both sides run on a bundle.

A bundle is an uncompressed, deterministic ``.tar`` whose sha256 names it::

    model.json      # BundleInfo.to_json(), strict, versioned
    model/...       # the artifact's files
    golden.npz      # "in:<input>" / "out:<output>" arrays, one leading axis of golden calls

This module is pure (values in, values out) except :func:`read_bundle_info`, which reads
``model.json`` out of a bundle file without unpacking it (the publisher and the device
need it before anything else). Unpacking, hashing files and switching pointers is
``device_agent.store``'s job; writing bundles is ``toolchain.package``'s.

Invariants:
- ``from_json(to_json(x)) == x``; ``from_json`` refuses unknown and missing keys at
  every level, naming the key and where it was found.
- ``files`` lists every member of the tar except ``model.json`` itself, with its hash.
"""

from __future__ import annotations

import enum
import json
import math
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import EdgeshipRuntimeError
from .spec import Engine, TensorSpec

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
GOLDEN_NPZ = "golden.npz"
MODEL_DIR = "model"
#: the largest model.json the reader accepts (it is read before anything is trusted)
MAX_MODEL_JSON_BYTES = 4 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(EdgeshipRuntimeError, ValueError):
    """A bundle or its model.json is malformed; the message names the key or member."""


class Precision(str, enum.Enum):
    """What an artifact was built as (values round-trip through CLI and JSON)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8_STATIC = "int8-static"
    INT8_DYNAMIC = "int8-dynamic"
    INT8 = "int8"


class Arch(str, enum.Enum):
    """CPU architectures, named as ``platform.machine()`` names them on Linux."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"
    ARMV7L = "armv7l"


_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


def normalize_arch(machine: str) -> str:
    """``platform.machine()`` spelled the way bundles name architectures."""
    m = machine.strip().lower()
    return _ARCH_ALIASES.get(m, m)


# ---------------------------------------------------------------------------- values
@dataclass(frozen=True)
class FileEntry:
    path: str  # posix path relative to the bundle root, e.g. "model/model.onnx"
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "FileEntry":
        d = _obj(d, {"path", "sha256", "bytes"}, where)
        path = _str(d["path"], f"{where}.path")
        check_member_name(path, where=f"{where}.path")
        sha = _str(d["sha256"], f"{where}.sha256")
        if not _SHA256.match(sha):
            raise BundleError(f"{where}.sha256: not a lowercase hex sha256: {sha!r}")
        return cls(path=path, sha256=sha, bytes=_int(d["bytes"], f"{where}.bytes", minimum=0))


@dataclass(frozen=True)
class Requirements:
    """What a device must have to run the bundle (checked before download and at install)."""

    engine: Engine
    min_engine_version: str
    arch: tuple[str, ...]
    opset: int | None = None  # ONNX default-domain opset, for ONNX models only

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine.value, "min_engine_version": self.min_engine_version,
                "arch": list(self.arch), "opset": self.opset}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "Requirements":
        d = _obj(d, {"engine", "min_engine_version", "arch", "opset"}, where)
        arch = _list(d["arch"], f"{where}.arch")
        for i, a in enumerate(arch):
            _enum(Arch, a, f"{where}.arch[{i}]")
        if not arch:
            raise BundleError(f"{where}.arch: must name at least one architecture")
        opset = None if d["opset"] is None else _int(d["opset"], f"{where}.opset", minimum=1)
        mev = _str(d["min_engine_version"], f"{where}.min_engine_version")
        if parse_version(mev) is None:
            raise BundleError(f"{where}.min_engine_version: not a version: {mev!r}")
        return cls(engine=_enum(Engine, d["engine"], f"{where}.engine"), min_engine_version=mev,
                   arch=tuple(arch), opset=opset)


@dataclass(frozen=True)
class Tolerances:
    """How far golden outputs may move on the device: elementwise atol and per-call cosine."""

    atol: float
    min_cosine: float

    def to_json(self) -> dict[str, Any]:
        return {"atol": self.atol, "min_cosine": self.min_cosine}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "Tolerances":
        d = _obj(d, {"atol", "min_cosine"}, where)
        atol = _float(d["atol"], f"{where}.atol")
        cos = _float(d["min_cosine"], f"{where}.min_cosine")
        if atol < 0 or not -1.0 <= cos <= 1.0:
            raise BundleError(f"{where}: atol must be >= 0 and min_cosine in [-1, 1]")
        return cls(atol=atol, min_cosine=cos)


@dataclass(frozen=True)
class TensorStats:
    """Baseline statistics of one tensor over the build's validation data (for drift checks)."""

    mean: float
    std: float
    min: float
    max: float

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "TensorStats":
        d = _obj(d, {"mean", "std", "min", "max"}, where)
        return cls(**{k: _float(d[k], f"{where}.{k}") for k in ("mean", "std", "min", "max")})

    @classmethod
    def of(cls, a: np.ndarray) -> "TensorStats":
        x = np.asarray(a, dtype=np.float64)
        return cls(mean=float(x.mean()), std=float(x.std()), min=float(x.min()), max=float(x.max()))


@dataclass(frozen=True)
class Source:
    build_manifest_sha256: str
    artifact_id: str

    def to_json(self) -> dict[str, Any]:
        return {"build_manifest_sha256": self.build_manifest_sha256, "artifact_id": self.artifact_id}

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "Source":
        d = _obj(d, {"build_manifest_sha256", "artifact_id"}, where)
        return cls(build_manifest_sha256=_str(d["build_manifest_sha256"], f"{where}.build_manifest_sha256"),
                   artifact_id=_str(d["artifact_id"], f"{where}.artifact_id"))


@dataclass(frozen=True)
class BundleInfo:
    """Everything ``model.json`` says about a bundle."""

    name: str
    version: str
    release: int
    engine: Engine
    precision: Precision
    model_file: str  # relative to model/, e.g. "model.onnx" or "model.xml"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    requirements: Requirements
    latency_budget_ms: float | None
    tolerances: Tolerances
    golden_calls: int
    input_stats: Mapping[str, TensorStats]
    output_stats: Mapping[str, TensorStats]
    files: tuple[FileEntry, ...]
    source: Source
    schema_version: int = field(default=SCHEMA_VERSION)

    @property
    def model_path(self) -> str:
        """The model file's member path inside the bundle."""
        return f"{MODEL_DIR}/{self.model_file}"

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "name": self.name, "version": self.version,
            "release": self.release, "engine": self.engine.value, "precision": self.precision.value,
            "model_file": self.model_file,
            "io": {"inputs": [s.to_json() for s in self.inputs],
                   "outputs": [s.to_json() for s in self.outputs]},
            "requirements": self.requirements.to_json(),
            "latency_budget_ms": self.latency_budget_ms,
            "tolerances": self.tolerances.to_json(),
            "golden_calls": self.golden_calls,
            "input_stats": {k: v.to_json() for k, v in sorted(self.input_stats.items())},
            "output_stats": {k: v.to_json() for k, v in sorted(self.output_stats.items())},
            "files": [f.to_json() for f in self.files],
            "source": self.source.to_json(),
        }

    def to_bytes(self) -> bytes:
        """Canonical bytes of model.json (sorted keys, fixed separators): deterministic bundles."""
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, d: Any, *, where: str = MODEL_JSON) -> "BundleInfo":
        """Parse and check a model.json object.

        Raises:
            BundleError: an unknown or missing key, a wrong type, or an inconsistent value,
                naming the key path.
        """
        keys = {"schema_version", "name", "version", "release", "engine", "precision", "model_file",
                "io", "requirements", "latency_budget_ms", "tolerances", "golden_calls",
                "input_stats", "output_stats", "files", "source"}
        d = _obj(d, keys, where)
        sv = _int(d["schema_version"], f"{where}.schema_version", minimum=1)
        if sv != SCHEMA_VERSION:
            raise BundleError(f"{where}.schema_version: {sv} is not supported (this edgeship reads "
                              f"{SCHEMA_VERSION}); upgrade edgeship")
        io = _obj(d["io"], {"inputs", "outputs"}, f"{where}.io")
        budget = d["latency_budget_ms"]
        info = cls(
            schema_version=sv,
            name=_name(d["name"], f"{where}.name"),
            version=_semver(d["version"], f"{where}.version"),
            release=_int(d["release"], f"{where}.release", minimum=1),
            engine=_enum(Engine, d["engine"], f"{where}.engine"),
            precision=_enum(Precision, d["precision"], f"{where}.precision"),
            model_file=_str(d["model_file"], f"{where}.model_file"),
            inputs=_specs(io["inputs"], f"{where}.io.inputs"),
            outputs=_specs(io["outputs"], f"{where}.io.outputs"),
            requirements=Requirements.from_json(d["requirements"], where=f"{where}.requirements"),
            latency_budget_ms=None if budget is None else _positive(budget, f"{where}.latency_budget_ms"),
            tolerances=Tolerances.from_json(d["tolerances"], where=f"{where}.tolerances"),
            golden_calls=_int(d["golden_calls"], f"{where}.golden_calls", minimum=0),
            input_stats=_stats(d["input_stats"], f"{where}.input_stats"),
            output_stats=_stats(d["output_stats"], f"{where}.output_stats"),
            files=tuple(FileEntry.from_json(f, where=f"{where}.files[{i}]")
                        for i, f in enumerate(_list(d["files"], f"{where}.files"))),
            source=Source.from_json(d["source"], where=f"{where}.source"),
        )
        _check_consistent(info, where)
        return info

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = MODEL_JSON) -> "BundleInfo":
        """Parse model.json bytes. Raises BundleError (also for invalid JSON)."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{where}: not valid JSON: {e}") from e
        return cls.from_json(obj, where=where)


def _check_consistent(info: BundleInfo, where: str) -> None:
    paths = [f.path for f in info.files]
    if len(set(paths)) != len(paths):
        raise BundleError(f"{where}.files: duplicate paths")
    if MODEL_JSON in paths:
        raise BundleError(f"{where}.files: must not list {MODEL_JSON} itself")
    for required in (info.model_path, GOLDEN_NPZ):
        if required not in paths:
            raise BundleError(f"{where}.files: {required!r} is not listed")
    if info.requirements.engine != info.engine:
        raise BundleError(f"{where}.requirements.engine ({info.requirements.engine.value}) differs "
                          f"from engine ({info.engine.value})")
    for p in paths:
        if p != GOLDEN_NPZ and not p.startswith(MODEL_DIR + "/"):
            raise BundleError(f"{where}.files: {p!r} is outside {MODEL_DIR}/ (only {GOLDEN_NPZ} may be)")


# ---------------------------------------------------------------------- tar members
def check_member_name(name: str, *, where: str = "bundle") -> str:
    """Refuse a member path that is absolute, climbs out, or is not in normal form.

    Raises:
        BundleError: naming the member.
    """
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or posixpath.normpath(name) != name or name in (".", "..")
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise BundleError(f"{where}: member path {name!r} is absolute, not normalized or climbs "
                          f"out of the bundle")
    return name


def check_members(members: Iterable[tarfile.TarInfo], info: BundleInfo | None = None,
                  *, where: str = "bundle", max_total_bytes: int | None = None) -> None:
    """Check a bundle's tar headers: regular files only, safe names, no duplicates, and
    (given ``info``) exactly the files model.json lists, with their sizes.

    Raises:
        BundleError: a link, device, directory or other special member; an unsafe or
            duplicate name; a member model.json does not list or a listed file missing;
            a size that differs from model.json; more than ``max_total_bytes`` in total.
    """
    seen: dict[str, int] = {}
    total = 0
    for m in members:
        check_member_name(m.name, where=where)
        if not m.isreg():
            kind = "symlink" if m.issym() else "hard link" if m.islnk() else "directory" if m.isdir() else "special file"
            raise BundleError(f"{where}: member {m.name!r} is a {kind}; bundles hold regular files only")
        if m.name in seen:
            raise BundleError(f"{where}: member {m.name!r} appears twice")
        seen[m.name] = m.size
        total += m.size
        if max_total_bytes is not None and total > max_total_bytes:
            raise BundleError(f"{where}: unpacked size passes the limit of {max_total_bytes} bytes")
    if MODEL_JSON not in seen:
        raise BundleError(f"{where}: no {MODEL_JSON}; not an edgeship bundle")
    if info is None:
        return
    listed = {f.path: f.bytes for f in info.files}
    unexpected = sorted(set(seen) - set(listed) - {MODEL_JSON})
    missing = sorted(set(listed) - set(seen))
    if unexpected or missing:
        raise BundleError(f"{where}: members differ from {MODEL_JSON}"
                          + (f"; unexpected {unexpected}" if unexpected else "")
                          + (f"; missing {missing}" if missing else ""))
    for path, size in listed.items():
        if seen[path] != size:
            raise BundleError(f"{where}: {path!r} is {seen[path]} bytes, {MODEL_JSON} says {size}")


def read_bundle_info(path: str | os.PathLike) -> BundleInfo:
    """Read and check ``model.json`` from a bundle file without unpacking anything.

    Raises:
        BundleError: not a tar, no/oversized/invalid model.json, or members that differ from it.
        OSError: the file cannot be read.
    """
    where = os.fspath(path)
    try:
        with tarfile.open(path, mode="r:") as tf:
            members = tf.getmembers()
            check_members(members, where=where)
            m = next(m for m in members if m.name == MODEL_JSON)
            if m.size > MAX_MODEL_JSON_BYTES:
                raise BundleError(f"{where}: {MODEL_JSON} is {m.size} bytes, over {MAX_MODEL_JSON_BYTES}")
            data = tf.extractfile(m).read()  # type: ignore[union-attr]
    except tarfile.TarError as e:
        raise BundleError(f"{where}: not a readable uncompressed tar: {e}") from e
    info = BundleInfo.from_bytes(data, where=f"{where}:{MODEL_JSON}")
    check_members(members, info, where=where)
    return info


# ------------------------------------------------------------------------ golden set
def golden_calls(arrays: Mapping[str, np.ndarray], info: BundleInfo) -> list[tuple[dict, dict]]:
    """Split golden.npz arrays into ``[(feeds, expected_outputs), ...]``, one per call.

    Raises:
        BundleError: an input or output of ``info`` has no array, or the call counts differ.
    """
    ins = {s.name: f"in:{s.name}" for s in info.inputs}
    outs = {s.name: f"out:{s.name}" for s in info.outputs}
    missing = [k for k in (*ins.values(), *outs.values()) if k not in arrays]
    if missing:
        raise BundleError(f"{GOLDEN_NPZ}: missing arrays {missing}")
    counts = {int(arrays[k].shape[0]) for k in (*ins.values(), *outs.values())}
    if counts != {info.golden_calls}:
        raise BundleError(f"{GOLDEN_NPZ}: leading axes {sorted(counts)} differ from "
                          f"golden_calls={info.golden_calls}")
    return [({n: arrays[k][i] for n, k in ins.items()}, {n: arrays[k][i] for n, k in outs.items()})
            for i in range(info.golden_calls)]


def compare_outputs(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    tol: Tolerances) -> list[str]:
    """Problems (empty when fine) between outputs and golden outputs under ``tol``:
    a missing output, a shape change, NaN/Inf, an element past atol, a cosine under min."""
    problems = []
    for name, exp in expected.items():
        if name not in got:
            problems.append(f"output {name!r} missing")
            continue
        g = np.asarray(got[name])
        if g.shape != exp.shape:
            problems.append(f"output {name!r} has shape {list(g.shape)}, golden {list(exp.shape)}")
            continue
        gf, ef = g.astype(np.float64).ravel(), np.asarray(exp, dtype=np.float64).ravel()
        if not np.all(np.isfinite(gf)):
            problems.append(f"output {name!r} holds NaN or Inf")
            continue
        err = float(np.max(np.abs(gf - ef))) if gf.size else 0.0
        if err > tol.atol:
            problems.append(f"output {name!r} max abs error {err:.3g} > atol {tol.atol:.3g}")
        ng, ne = float(np.linalg.norm(gf)), float(np.linalg.norm(ef))
        cos = 1.0 if ng == 0 and ne == 0 else (float(gf @ ef) / (ng * ne) if ng and ne else 0.0)
        if cos < tol.min_cosine:
            problems.append(f"output {name!r} cosine {cos:.6f} < {tol.min_cosine}")
    return problems


# -------------------------------------------------------------------- compatibility
def parse_version(v: str) -> tuple[int, ...] | None:
    """Leading numeric components of a version string ("1.32.0rc1" -> (1, 32, 0))."""
    m = re.match(r"^(\d+(?:\.\d+)*)", v.strip())
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def compatibility_problems(req: Requirements, *, machine: str,
                           engine_versions: Mapping[str, str | None],
                           max_opset: int | None = None) -> list[str]:
    """Why a device cannot run a bundle (empty when it can). Pure: the caller passes
    ``platform.machine()`` and the installed engine versions (``runtime.engine_version``)."""
    problems = []
    arch = normalize_arch(machine)
    if arch not in req.arch:
        problems.append(f"arch {arch} is not one of {list(req.arch)}")
    have = engine_versions.get(req.engine.value)
    if have is None:
        problems.append(f"engine {req.engine.value} is not installed")
    else:
        hv, need = parse_version(have), parse_version(req.min_engine_version)
        if hv is None or need is None or _pad(hv) < _pad(need):
            problems.append(f"engine {req.engine.value} {have} is older than {req.min_engine_version}")
    if req.opset is not None and max_opset is not None and req.opset > max_opset:
        problems.append(f"ONNX opset {req.opset} is newer than this device supports ({max_opset})")
    return problems


def _pad(v: tuple[int, ...]) -> tuple[int, ...]:
    return v + (0,) * (4 - len(v))


# ------------------------------------------------------------------- strict parsing
def _obj(d: Any, keys: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - keys)
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {unknown}")
    missing = sorted(keys - set(d))
    if missing:
        raise BundleError(f"{where}: missing key(s) {missing}")
    return d


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise BundleError(f"{where}: expected a non-empty string, got {v!r}")
    return v


def _name(v: Any, where: str) -> str:
    s = _str(v, where)
    if not _NAME.match(s):
        raise BundleError(f"{where}: {s!r} must be 1-128 of [A-Za-z0-9._-], starting alphanumeric")
    return s


def _semver(v: Any, where: str) -> str:
    s = _str(v, where)
    if not _SEMVER.match(s):
        raise BundleError(f"{where}: {s!r} is not a semantic version like 1.2.3")
    return s


def _int(v: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BundleError(f"{where}: expected an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise BundleError(f"{where}: must be >= {minimum}, got {v}")
    return v


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BundleError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _positive(v: Any, where: str) -> float:
    f = _float(v, where)
    if f <= 0:
        raise BundleError(f"{where}: must be > 0, got {v!r}")
    return f


def _list(v: Any, where: str) -> list:
    if not isinstance(v, list):
        raise BundleError(f"{where}: expected a list, got {type(v).__name__}")
    return v


def _enum(cls, v: Any, where: str):
    try:
        return cls(v)
    except ValueError:
        raise BundleError(f"{where}: {v!r} is not one of {[e.value for e in cls]}") from None


def _specs(v: Any, where: str) -> tuple[TensorSpec, ...]:
    out = []
    for i, s in enumerate(_list(v, where)):
        d = _obj(s, {"name", "dtype", "shape"}, f"{where}[{i}]")
        shape = _list(d["shape"], f"{where}[{i}].shape")
        for j, dim in enumerate(shape):
            if not (dim is None or isinstance(dim, str) or (isinstance(dim, int) and not isinstance(dim, bool))):
                raise BundleError(f"{where}[{i}].shape[{j}]: {dim!r} is not an int, a name or null")
        try:
            np.dtype(d["dtype"])
        except TypeError:
            raise BundleError(f"{where}[{i}].dtype: {d['dtype']!r} is not a numpy dtype") from None
        out.append(TensorSpec(name=_str(d["name"], f"{where}[{i}].name"), dtype=str(d["dtype"]),
                              shape=tuple(shape)))
    if not out:
        raise BundleError(f"{where}: empty")
    return tuple(out)


def _stats(v: Any, where: str) -> dict[str, TensorStats]:
    if not isinstance(v, dict):
        raise BundleError(f"{where}: expected an object")
    return {str(k): TensorStats.from_json(s, where=f"{where}.{k}") for k, s in v.items()}
