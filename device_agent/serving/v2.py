"""Open Inference Protocol (KServe v2) JSON <-> numpy, pure functions.

Requests carry tensors as ``{"name", "shape", "datatype", "data"}``; ``data`` is the
row-major flattened contents (nested lists are accepted too, as Triton does). No silent
casting: a datatype that differs from the model input's is a 400, naming both.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

import numpy as np

from runtime.spec import TensorSpec

from ..errors import DeviceAgentError

#: v2 datatype -> numpy dtype name (BYTES is not supported by edgeship's engines)
V2_TO_NP = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
NP_TO_V2 = {v: k for k, v in V2_TO_NP.items()}
PLATFORM = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino_ir", "tflite": "tflite"}
_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
_INPUT_KEYS = {"name", "shape", "datatype", "data", "parameters"}


class V2Error(DeviceAgentError):
    """A request the protocol layer refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def v2_datatype(dtype: str) -> str:
    return NP_TO_V2.get(dtype, dtype.upper())


def v2_shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]


def tensor_metadata(specs: Iterable[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": v2_shape(s)} for s in specs]


def parse_infer_request(body: bytes, inputs: list[TensorSpec]) -> tuple[dict[str, np.ndarray], list[str] | None, Any]:
    """``(feeds, requested output names or None, request id)`` from a v2 JSON body.

    Raises:
        V2Error(400): malformed JSON, unknown keys, unknown/missing/duplicate inputs, a
            datatype other than the model's, a bad shape, or data that does not fill it.
    """
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise V2Error(400, f"request body is not valid JSON: {e}") from e
    except RecursionError:
        raise V2Error(400, "request body is nested too deeply to read as JSON") from None
    if not isinstance(req, dict):
        raise V2Error(400, "request body must be a JSON object with an \"inputs\" list")
    unknown = sorted(set(req) - _REQUEST_KEYS)
    if unknown:
        raise V2Error(400, f"unknown request key(s) {unknown}; allowed: {sorted(_REQUEST_KEYS)}")
    tensors = req.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise V2Error(400, "\"inputs\" must be a non-empty list of tensors")
    specs = {s.name: s for s in inputs}
    feeds: dict[str, np.ndarray] = {}
    for i, t in enumerate(tensors):
        name, arr = _parse_tensor(t, i, specs)
        if name in feeds:
            raise V2Error(400, f"input {name!r} is given twice")
        feeds[name] = arr
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise V2Error(400, f"missing input(s) {missing}; the model takes {sorted(specs)}")
    return feeds, _requested_outputs(req.get("outputs")), req.get("id")


def _parse_tensor(t: Any, i: int, specs: Mapping[str, TensorSpec]) -> tuple[str, np.ndarray]:
    if not isinstance(t, dict):
        raise V2Error(400, f"inputs[{i}] must be an object")
    unknown = sorted(set(t) - _INPUT_KEYS)
    missing = sorted({"name", "shape", "datatype", "data"} - set(t))
    if unknown or missing:
        raise V2Error(400, f"inputs[{i}]: " + (f"unknown key(s) {unknown} " if unknown else "")
                      + (f"missing key(s) {missing}" if missing else ""))
    name = t["name"]
    if name not in specs:
        raise V2Error(400, f"unknown input {name!r}; the model takes {sorted(specs)}")
    spec = specs[name]
    dt = t["datatype"]
    if dt not in V2_TO_NP:
        raise V2Error(400, f"input {name!r}: datatype {dt!r} is not supported; use one of {sorted(V2_TO_NP)}")
    if V2_TO_NP[dt] != spec.dtype:
        raise V2Error(400, f"input {name!r}: datatype {dt} but the model takes {v2_datatype(spec.dtype)}")
    shape = t["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise V2Error(400, f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if not spec.accepts_shape(tuple(shape)):
        raise V2Error(400, f"input {name!r}: shape {shape} does not fit the model's {v2_shape(spec)}")
    try:
        arr = np.array(t["data"], dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise V2Error(400, f"input {name!r}: data is not a {dt} array: {e}") from e
    _refuse_silent_cast(name, dt, t["data"], arr)
    if arr.size != math.prod(shape):
        raise V2Error(400, f"input {name!r}: {arr.size} values do not fill shape {shape} "
                           f"({math.prod(shape)} values)")
    return name, arr.reshape(shape)


def _refuse_silent_cast(name: str, dt: str, data: Any, arr: np.ndarray) -> None:
    """numpy turns ``null`` into NaN and truncates 0.5 to an integer 0: refuse both (400)."""
    if arr.size == 0:
        return
    if arr.dtype.kind == "f":
        if np.isnan(arr).any() and any(v is None for v in _flat(data)):  # slow path only with NaN
            raise V2Error(400, f"input {name!r}: data holds null; send a number for every element")
        return
    natural = np.asarray(data).dtype.kind
    want = "b" if arr.dtype.kind == "b" else "biu"
    if natural not in want:
        what = "true/false" if arr.dtype.kind == "b" else "integers"
        raise V2Error(400, f"input {name!r}: {dt} data must be {what} (got {np.asarray(data).dtype} values); "
                           f"no silent casting")


def _flat(data: Any) -> Iterable[Any]:
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        else:
            yield v


def _requested_outputs(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise V2Error(400, "\"outputs\" must be a list of objects with a \"name\"")
    return [o["name"] for o in outputs]


def infer_response(*, model_name: str, model_version: str, outputs: Mapping[str, np.ndarray],
                   requested: list[str] | None, request_id: Any) -> dict[str, Any]:
    """The v2 response object. Raises V2Error(400) for a requested output the model lacks."""
    names = list(outputs) if requested is None else requested
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise V2Error(400, f"unknown output(s) {unknown}; the model gives {sorted(outputs)}")
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": [
        {"name": n, "datatype": v2_datatype(outputs[n].dtype.name), "shape": list(outputs[n].shape),
         "data": outputs[n].ravel().tolist()} for n in names]}
    if request_id is not None:
        resp["id"] = request_id
    return resp
