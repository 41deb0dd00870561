"""The model bundle's ``model.json``: the schema both sides agree on (strict, versioned).

A bundle is an uncompressed, deterministic ``.tar`` whose sha256 names it::

    model.json      # BundleInfo.to_json(), strict, versioned
    model/...       # the artifact's files
    golden.npz      # "in:<input>" / "out:<output>" arrays, one leading axis of golden calls

Pure: values in, values out. The rest of the bundle contract sits beside this module:
``members`` (tar headers, reading model.json out of a bundle file), ``golden`` (golden-set
numerics), ``compat`` (can this device run it). Unpacking and switching pointers is
``device_agent.store``'s job; writing bundles is ``toolchain.package``'s.

Invariants:
- ``from_json(to_json(x)) == x``; ``from_json`` refuses unknown and missing keys at
  every level, naming the key and where it was found.
- ``files`` lists every member of the tar except ``model.json`` itself, with its hash.
"""

from __future__ import annotations

import enum
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...spec import Engine, TensorSpec
from ..capture.rules import CapturePolicy, class_output_problem
from ..errors import BundleError
from . import _strict as strict
from .baseline import DriftBaseline

#: the newest schema this edgeship writes; 2 added ``drift`` (the drift baseline, may be null),
#: 3 added ``capture`` (the release's capture rules, may be null). A bundle is written in the
#: oldest schema that holds what it carries (:func:`schema_version_for`): one without capture
#: rules stays schema 2, so agents that read only 1 and 2 keep installing it.
SCHEMA_VERSION = 3
#: read by this edgeship (a version-1 model.json has no ``drift`` key, version 1 and 2 no ``capture``)
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
MODEL_JSON = "model.json"
GOLDEN_NPZ = "golden.npz"
MODEL_DIR = "model"
#: the largest model.json the reader accepts (it is read before anything is trusted)
MAX_MODEL_JSON_BYTES = 4 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def parse_version(v: str) -> tuple[int, ...] | None:
    """Leading numeric components of a version string ("1.32.0rc1" -> (1, 32, 0))."""
    m = re.match(r"^(\d+(?:\.\d+)*)", v.strip())
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def schema_version_for(*, capture: CapturePolicy | None) -> int:
    """The schema a new bundle is written in: 3 when it carries capture rules, else 2 (an
    agent older than schema 3 refuses the first by its version and installs the second)."""
    return 3 if capture is not None else 2


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
        d = strict.obj(d, {"path", "sha256", "bytes"}, where)
        path = strict.string(d["path"], f"{where}.path")
        check_member_name(path, where=f"{where}.path")
        sha = strict.string(d["sha256"], f"{where}.sha256")
        if not _SHA256.match(sha):
            raise BundleError(f"{where}.sha256: not a lowercase hex sha256: {sha!r}")
        return cls(path=path, sha256=sha, bytes=strict.integer(d["bytes"], f"{where}.bytes", minimum=0))


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
        d = strict.obj(d, {"engine", "min_engine_version", "arch", "opset"}, where)
        arch = strict.array(d["arch"], f"{where}.arch")
        for i, a in enumerate(arch):
            strict.enum_value(Arch, a, f"{where}.arch[{i}]")
        if not arch:
            raise BundleError(f"{where}.arch: must name at least one architecture")
        opset = None if d["opset"] is None else strict.integer(d["opset"], f"{where}.opset", minimum=1)
        mev = strict.string(d["min_engine_version"], f"{where}.min_engine_version")
        if parse_version(mev) is None:
            raise BundleError(f"{where}.min_engine_version: not a version: {mev!r}")
        return cls(engine=strict.enum_value(Engine, d["engine"], f"{where}.engine"), min_engine_version=mev,
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
        d = strict.obj(d, {"atol", "min_cosine"}, where)
        atol = strict.number(d["atol"], f"{where}.atol")
        cos = strict.number(d["min_cosine"], f"{where}.min_cosine")
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
        d = strict.obj(d, {"mean", "std", "min", "max"}, where)
        return cls(**{k: strict.number(d[k], f"{where}.{k}") for k in ("mean", "std", "min", "max")})

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
        d = strict.obj(d, {"build_manifest_sha256", "artifact_id"}, where)
        return cls(build_manifest_sha256=strict.string(d["build_manifest_sha256"], f"{where}.build_manifest_sha256"),
                   artifact_id=strict.string(d["artifact_id"], f"{where}.artifact_id"))


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
    #: the drift baseline (schema 2; None in a version-1 bundle or when the build had too little data)
    drift: DriftBaseline | None = None
    #: the capture rules the release ships with (schema 3; None: no rules, as in every older bundle)
    capture: CapturePolicy | None = None

    @property
    def model_path(self) -> str:
        """The model file's member path inside the bundle."""
        return f"{MODEL_DIR}/{self.model_file}"

    @property
    def class_output(self) -> str:
        """The bundle's class output, decided at package time: that of the drift baseline's class
        mix, judged by capture rules left without an ``output`` ("": none; such a rule then reads the
        first output, which ``edgeship package`` no longer writes: without a baseline it puts the
        decided class output into the rule, or refuses the rule when none was decided)."""
        return self.drift.classes.output if self.drift is not None and self.drift.classes is not None else ""

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def to_json(self) -> dict[str, Any]:
        d = self._to_json_v1()
        if self.schema_version >= 2:
            d["drift"] = self.drift.to_json() if self.drift else None
        if self.schema_version >= 3:
            d["capture"] = self.capture.to_json() if self.capture is not None else None
        elif self.capture is not None:
            raise BundleError(f"schema_version {self.schema_version} has no capture section; "
                              f"capture rules need schema 3")
        return d

    def _to_json_v1(self) -> dict[str, Any]:
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
        sv = strict.integer(d.get("schema_version") if isinstance(d, dict) else None, f"{where}.schema_version",
                            minimum=1)
        if sv not in READABLE_SCHEMA_VERSIONS:
            raise BundleError(f"{where}.schema_version: {sv} is not supported (this edgeship reads "
                              f"{list(READABLE_SCHEMA_VERSIONS)}); upgrade edgeship")
        d = strict.obj(d, keys | ({"drift"} if sv >= 2 else set()) | ({"capture"} if sv >= 3 else set()), where)
        drift, capture = d.get("drift"), d.get("capture")
        io = strict.obj(d["io"], {"inputs", "outputs"}, f"{where}.io")
        budget = d["latency_budget_ms"]
        info = cls(
            schema_version=sv,
            name=strict.name(d["name"], f"{where}.name"),
            version=strict.semver(d["version"], f"{where}.version"),
            release=strict.integer(d["release"], f"{where}.release", minimum=1),
            engine=strict.enum_value(Engine, d["engine"], f"{where}.engine"),
            precision=strict.enum_value(Precision, d["precision"], f"{where}.precision"),
            model_file=strict.string(d["model_file"], f"{where}.model_file"),
            inputs=strict.tensor_specs(io["inputs"], f"{where}.io.inputs"),
            outputs=strict.tensor_specs(io["outputs"], f"{where}.io.outputs"),
            requirements=Requirements.from_json(d["requirements"], where=f"{where}.requirements"),
            latency_budget_ms=None if budget is None else strict.positive(budget, f"{where}.latency_budget_ms"),
            tolerances=Tolerances.from_json(d["tolerances"], where=f"{where}.tolerances"),
            golden_calls=strict.integer(d["golden_calls"], f"{where}.golden_calls", minimum=0),
            input_stats=_stats(d["input_stats"], f"{where}.input_stats"),
            output_stats=_stats(d["output_stats"], f"{where}.output_stats"),
            files=tuple(FileEntry.from_json(f, where=f"{where}.files[{i}]")
                        for i, f in enumerate(strict.array(d["files"], f"{where}.files"))),
            source=Source.from_json(d["source"], where=f"{where}.source"),
            drift=None if drift is None else DriftBaseline.from_json(drift, where=f"{where}.drift"),
            capture=None if capture is None else CapturePolicy.from_json(capture, where=f"{where}.capture"),
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
    if info.drift is not None:
        names = {s.name for s in info.inputs} | {s.name for s in info.outputs}
        unknown = sorted(set(info.drift.tensors) - names)
        if unknown:
            raise BundleError(f"{where}.drift.tensors: {unknown} are not inputs or outputs of the model")
    for i, rule in enumerate(info.capture.rules if info.capture is not None else ()):
        problem = class_output_problem(rule, info.outputs, info.class_output)
        if problem:
            raise BundleError(f"{where}.capture.rules[{i}]: {problem}")
    if info.requirements.engine != info.engine:
        raise BundleError(f"{where}.requirements.engine ({info.requirements.engine.value}) differs "
                          f"from engine ({info.engine.value})")
    for p in paths:
        if p != GOLDEN_NPZ and not p.startswith(MODEL_DIR + "/"):
            raise BundleError(f"{where}.files: {p!r} is outside {MODEL_DIR}/ (only {GOLDEN_NPZ} may be)")


def _stats(v: Any, where: str) -> dict[str, TensorStats]:
    if not isinstance(v, dict):
        raise BundleError(f"{where}: expected an object")
    return {str(k): TensorStats.from_json(s, where=f"{where}.{k}") for k, s in v.items()}
