"""Tensor contents of the Open Inference Protocol <-> numpy: pure functions that HTTP and gRPC share.

Datatypes: the protocol's names (``FP32``, ``INT64``, ``BYTES`` ...) against the numpy dtype
names the runtime's sessions report. ``BYTES`` is a string tensor: the runtime reports it as
``object`` (ONNX Runtime's ``tensor(string)``; elements are ``str``). On the wire a BYTES
element is raw bytes; the agent hands the engine UTF-8 text, so a BYTES input that is not
UTF-8 is refused (400) rather than mangled.

Two encodings of a tensor's contents:

- **raw** (the binary tensor data extension over HTTP, ``raw_input_contents`` /
  ``raw_output_contents`` over gRPC): the row-major elements, little-endian, no padding;
  a BYTES element is a 4-byte little-endian length followed by its bytes. NaN and Inf
  travel as they are.
- **JSON**: a (flat or nested) list of numbers, ``true``/``false`` or strings. JSON has no
  NaN or Infinity, so non-finite floats follow the proto3 JSON mapping: the strings
  ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (in outputs always; accepted in inputs).
  Every JSON answer of the agent is strict JSON.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Iterable

import numpy as np

from .errors import V2Error

#: protocol datatype -> numpy dtype name of the runtime's tensor specs
V2_TO_NP = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
NP_TO_V2 = {v: k for k, v in V2_TO_NP.items()}
#: the proto3 JSON spelling of non-finite floats
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_LEN = struct.Struct("<I")


def v2_datatype(dtype: str) -> str:
    """The protocol's name of a numpy dtype name (``float32`` -> ``FP32``)."""
    return NP_TO_V2.get(dtype, dtype.upper())


def np_dtype(datatype: str, *, name: str) -> np.dtype:
    """The numpy dtype of a protocol datatype. Raises V2Error(400) for an unknown one."""
    if datatype not in V2_TO_NP:
        raise V2Error(400, f"input {name!r}: datatype {datatype!r} is not supported; use one of {sorted(V2_TO_NP)}")
    return np.dtype(V2_TO_NP[datatype])


# ------------------------------------------------------------------------------ raw
def from_raw(raw: bytes | memoryview, *, name: str, datatype: str, shape: list[int]) -> np.ndarray:
    """An array from raw contents (no copy for fixed-size types).

    Raises:
        V2Error(400): the byte count does not fit the shape, or BYTES that are not UTF-8.
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return _text_array(deserialize_bytes(raw, name=name), name=name, shape=shape)
    dt = np_dtype(datatype, name=name).newbyteorder("<")
    if len(raw) != count * dt.itemsize:
        raise V2Error(400, f"input {name!r}: {len(raw)} bytes of binary data, but shape {shape} of "
                           f"{datatype} takes {count * dt.itemsize} bytes")
    return np.frombuffer(raw, dtype=dt, count=count).reshape(shape)


def to_raw(arr: np.ndarray) -> bytes:
    """The raw contents of an output (little-endian; BYTES length-prefixed)."""
    if arr.dtype.kind in "OUS":
        return serialize_bytes(arr)
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.tobytes()


def serialize_bytes(arr: np.ndarray) -> bytes:
    """BYTES elements as 4-byte little-endian length + bytes each, row-major."""
    parts = []
    for v in np.asarray(arr, dtype=object).ravel():
        b = v.encode() if isinstance(v, str) else bytes(v)
        parts += [_LEN.pack(len(b)), b]
    return b"".join(parts)


def deserialize_bytes(raw: bytes | memoryview, *, name: str) -> list[bytes]:
    """The elements of serialized BYTES. Raises V2Error(400) for a truncated element."""
    mv, out, i = memoryview(raw), [], 0
    while i < len(mv):
        if i + 4 > len(mv):
            raise V2Error(400, f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (n,) = _LEN.unpack_from(mv, i)
        if i + 4 + n > len(mv):
            raise V2Error(400, f"input {name!r}: BYTES element {len(out)} says {n} bytes, "
                               f"only {len(mv) - i - 4} are left")
        out.append(bytes(mv[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def _text_array(items: list, *, name: str, shape: list[int]) -> np.ndarray:
    if len(items) != math.prod(shape):
        raise V2Error(400, f"input {name!r}: {len(items)} values do not fill shape {shape} "
                           f"({math.prod(shape)} values)")
    out = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):
        if isinstance(v, (bytes, bytearray)):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise V2Error(400, f"input {name!r}: BYTES element {i} is not UTF-8 text ({e.reason}); "
                                   f"the model's string tensors hold text") from None
        elif not isinstance(v, str):
            raise V2Error(400, f"input {name!r}: BYTES data must be strings, element {i} is {type(v).__name__}")
        out[i] = v
    return out.reshape(shape)


# ----------------------------------------------------------------------------- JSON
def from_json(data: Any, *, name: str, datatype: str, shape: list[int]) -> np.ndarray:
    """An array from JSON ``data`` (flat or nested), with no silent casting.

    Raises:
        V2Error(400): data of another type (``null`` in floats, ``0.5`` or ``true`` for an
            integer, a number for BYTES), or too few/many values for the shape.
    """
    dt = np_dtype(datatype, name=name)
    if datatype == "BYTES":
        return _text_array(list(_flat(data)) if isinstance(data, list) else [data], name=name, shape=shape)
    try:
        natural = np.asarray(data)  # its kind says whether numpy would cast silently
        # floats from numbers: one parse; integers keep numpy's range check (astype would wrap)
        numeric = dt.kind == "f" and natural.dtype.kind in "biuf"
        arr = natural.astype(dt) if numeric else np.array(data, dtype=dt)
    except (ValueError, TypeError, OverflowError) as e:
        raise V2Error(400, f"input {name!r}: data is not a {datatype} array: {e}") from e
    _refuse_silent_cast(name, datatype, data, arr, natural.dtype)
    if arr.size != math.prod(shape):
        raise V2Error(400, f"input {name!r}: {arr.size} values do not fill shape {shape} "
                           f"({math.prod(shape)} values)")
    return arr.reshape(shape)


def _refuse_silent_cast(name: str, dt: str, data: Any, arr: np.ndarray, natural: np.dtype) -> None:
    """numpy turns ``null`` into NaN, truncates 0.5 to 0 and reads "7" as 7: refuse those (400).
    ``natural`` is the dtype numpy gives ``data`` by itself."""
    if arr.size == 0:
        return
    if arr.dtype.kind == "f":
        # slow path only with NaN/Inf (null, or a word other than ours) or with strings ("7")
        if natural.kind not in "biuf" or not np.isfinite(arr).all():
            for v in _flat(data):
                if v is None or (isinstance(v, str) and v not in NONFINITE):
                    raise V2Error(400, f"input {name!r}: data holds {json.dumps(v)}; send a number for every element "
                                       f"(non-finite values as \"NaN\", \"Infinity\", \"-Infinity\")")
        return
    want = "b" if arr.dtype.kind == "b" else "biu"
    if natural.kind not in want:
        what = "true/false" if arr.dtype.kind == "b" else "integers"
        raise V2Error(400, f"input {name!r}: {dt} data must be {what} (got {natural} values); "
                           f"no silent casting")


def to_json_data(arr: np.ndarray) -> list:
    """Flat JSON-ready contents; non-finite floats as "NaN"/"Infinity"/"-Infinity"."""
    flat = arr.ravel()
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [v if math.isfinite(v) else _nonfinite(v) for v in flat.tolist()]
    if flat.dtype.kind in "OS":
        return [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def _nonfinite(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _flat(data: Any) -> Iterable[Any]:
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        else:
            yield v


# ------------------------------------------------------------------ classification
def classify(arr: np.ndarray, k: int, *, name: str) -> np.ndarray:
    """The classification extension: the top ``k`` of the last axis as BYTES ``"<score>:<index>"``.

    Raises:
        V2Error(400): ``k`` < 1, or an output that is not numeric or has no axis to rank.
    """
    if k < 1 or arr.ndim < 1 or arr.dtype.kind not in "biuf":
        raise V2Error(400, f"output {name!r}: classification needs a class count >= 1 and a numeric "
                           f"output with a class axis (got {k} for {arr.dtype}{list(arr.shape)})")
    k = min(k, arr.shape[-1])
    idx = np.argsort(-arr, axis=-1, kind="stable")[..., :k]
    scores = np.take_along_axis(arr, idx, axis=-1)
    out = np.empty(idx.shape, dtype=object)
    for pos in np.ndindex(idx.shape):
        out[pos] = f"{float(scores[pos]):f}:{int(idx[pos])}"
    return out
