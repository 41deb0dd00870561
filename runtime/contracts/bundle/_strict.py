"""Strict JSON parsing for the bundle contract: every helper names the key path it refuses.

Values in, values out; each raises :class:`~runtime.contracts.errors.BundleError`.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

import numpy as np

from ...spec import TensorSpec
from ..errors import BundleError

_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def obj(d: Any, keys: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - keys)
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {unknown}{unknown_hint(unknown, keys)}")
    missing = sorted(keys - set(d))
    if missing:
        raise BundleError(f"{where}: missing key(s) {missing}")
    return d


def unknown_hint(unknown: list, keys: set[str]) -> str:
    """`` (did you mean 'rate'?); valid keys: [...]`` for a key close to a valid one (difflib), or
    just the valid keys."""
    close = [(k, m[0]) for k in unknown if isinstance(k, str)
             and (m := difflib.get_close_matches(k, keys, n=1, cutoff=0.75))]
    said = ", ".join(repr(m) if len(unknown) == 1 else f"{m!r} for {k!r}" for k, m in close)
    return (f" (did you mean {said}?)" if close else "") + f"; valid keys: {sorted(keys)}"


def string(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise BundleError(f"{where}: expected a non-empty string, got {v!r}")
    return v


def name(v: Any, where: str) -> str:
    s = string(v, where)
    if not _NAME.match(s):
        raise BundleError(f"{where}: {s!r} must be 1-128 of [A-Za-z0-9._-], starting alphanumeric")
    return s


def semver(v: Any, where: str) -> str:
    s = string(v, where)
    if not _SEMVER.match(s):
        raise BundleError(f"{where}: {s!r} is not a semantic version like 1.2.3")
    return s


def integer(v: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BundleError(f"{where}: expected an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise BundleError(f"{where}: must be >= {minimum}, got {v}")
    return v


def number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BundleError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def positive(v: Any, where: str) -> float:
    f = number(v, where)
    if f <= 0:
        raise BundleError(f"{where}: must be > 0, got {v!r}")
    return f


def array(v: Any, where: str) -> list:
    if not isinstance(v, list):
        raise BundleError(f"{where}: expected a list, got {type(v).__name__}")
    return v


def enum_value(cls, v: Any, where: str):
    try:
        return cls(v)
    except ValueError:
        raise BundleError(f"{where}: {v!r} is not one of {[e.value for e in cls]}") from None


def tensor_specs(v: Any, where: str) -> tuple[TensorSpec, ...]:
    out = []
    for i, s in enumerate(array(v, where)):
        d = obj(s, {"name", "dtype", "shape"}, f"{where}[{i}]")
        shape = array(d["shape"], f"{where}[{i}].shape")
        for j, dim in enumerate(shape):
            if not (dim is None or isinstance(dim, str) or (isinstance(dim, int) and not isinstance(dim, bool))):
                raise BundleError(f"{where}[{i}].shape[{j}]: {dim!r} is not an int, a name or null")
        try:
            np.dtype(d["dtype"])
        except TypeError:
            raise BundleError(f"{where}[{i}].dtype: {d['dtype']!r} is not a numpy dtype") from None
        out.append(TensorSpec(name=string(d["name"], f"{where}[{i}].name"), dtype=str(d["dtype"]),
                              shape=tuple(shape)))
    if not out:
        raise BundleError(f"{where}: empty")
    return tuple(out)
