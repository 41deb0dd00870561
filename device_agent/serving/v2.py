"""Open Inference Protocol (KServe v2) inference requests and responses, pure functions.

A request (HTTP JSON, or JSON header + binary tensor data, see below) becomes an
:class:`InferRequest`: the feeds checked against the model's inputs, the outputs asked
for, the request id. :func:`infer_response` turns the model's outputs back into the
response header and the binary chunks. gRPC (:mod:`.grpc`) builds the same objects from
protobuf messages with :func:`check_feed` and :func:`response_outputs`.

Request body keys: ``inputs`` (required), ``id``, ``parameters``, ``outputs``, and
``model_name``/``model_version`` (sent by some clients, e.g. the KServe SDK; they must name
the model the path names). No silent casting: a datatype that differs from the model
input's is a 400 naming both.

**Binary tensor data extension** (Triton's, what ``tritonclient`` sends by default): with
the header ``Inference-Header-Content-Length: N`` the first N bytes of the body are the JSON
header and the rest holds the raw contents of every input whose parameters say
``"binary_data_size": K``, in input order. An output is answered raw when its parameters
say ``"binary_data": true`` or, for outputs without that parameter, when the request's
parameters say ``"binary_data_output": true``; it then carries ``"binary_data_size"`` and
the response has the same header. Per output, ``"classification": K`` answers the top K
classes of the last axis as BYTES ``"<score>:<index>"`` (the classification extension).

Request parameters: ``binary_data_output`` is honoured; ``sequence_id``/``sequence_start``/
``sequence_end`` are refused (no stateful models); any other (``priority``, ``timeout``,
custom ones) is accepted and ignored, as the protocol lets a server do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from runtime.spec import TensorSpec

from .errors import V2Error
from .tensors import V2_TO_NP, classify, from_json, from_raw, to_json_data, to_raw, v2_datatype

__all__ = ["V2Error", "InferRequest", "RequestedOutput", "parse_infer_request", "infer_response",
           "tensor_metadata", "v2_datatype", "v2_shape", "PLATFORM"]

PLATFORM = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino_ir", "tflite": "tflite"}
HEADER_LENGTH = "Inference-Header-Content-Length"
_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs", "model_name", "model_version"}
_INPUT_KEYS = {"name", "shape", "datatype", "data", "parameters"}
_OUTPUT_KEYS = {"name", "parameters"}
_STATEFUL = ("sequence_id", "sequence_start", "sequence_end")
_BINARY_HINT = ("; a body with binary tensor data needs the Inference-Header-Content-Length header "
                "(the binary tensor data extension) giving the length of its JSON part")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's binary_data_output decides
    class_count: int = 0


@dataclass(frozen=True)
class InferRequest:
    feeds: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output of the model
    request_id: Any = None
    binary_output: bool = False
    model_version: str | None = None  # the body's model_version, when it names one
    #: request parameter ``edgeship_expected``: the expected class of each sample (capture rules)
    expected: tuple[int, ...] | None = None


def v2_shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]


def tensor_metadata(specs: Iterable[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": v2_shape(s)} for s in specs]


# ------------------------------------------------------------------------- request
def parse_infer_request(body: bytes, inputs: list[TensorSpec], *, header_length: str | None = None,
                        model: str | None = None, version: str | None = None) -> InferRequest:
    """The request in ``body`` (JSON, or JSON + binary when ``header_length`` is given).

    ``model``/``version`` are the names in the path; the body's ``model_name`` and
    ``model_version``, when sent, must agree with them.

    Raises:
        V2Error(400): malformed JSON or binary layout, unknown keys or parameters, unknown/
            missing/duplicate inputs, a datatype other than the model's, a bad shape, data
            that does not fill it, or a model_name/model_version other than the path's.
    """
    head, binary = _split(body, header_length)
    req = _load_header(head, binary_expected=binary is not None)
    unknown = sorted(set(req) - _REQUEST_KEYS)
    if unknown:
        raise V2Error(400, f"unknown request key(s) {unknown}; allowed: {sorted(_REQUEST_KEYS)}")
    _check_names(req, model, version)
    params = _params(req.get("parameters"), "request")
    stateful = [k for k in _STATEFUL if k in params]
    if stateful:
        raise V2Error(400, f"request parameters {stateful}: sequence (stateful) models are not supported")
    tensors = req.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise V2Error(400, "\"inputs\" must be a non-empty list of tensors")
    specs = {s.name: s for s in inputs}
    reader = _Chunks(binary)
    feeds: dict[str, np.ndarray] = {}
    for i, t in enumerate(tensors):
        name, arr = _parse_tensor(t, i, specs, reader)
        if name in feeds:
            raise V2Error(400, f"input {name!r} is given twice")
        feeds[name] = arr
    reader.done()
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise V2Error(400, f"missing input(s) {missing}; the model takes {sorted(specs)}")
    return InferRequest(feeds=feeds, outputs=_requested_outputs(req.get("outputs")), request_id=req.get("id"),
                        binary_output=_flag(params, "binary_data_output", "request"),
                        model_version=None if req.get("model_version") in (None, "") else str(req["model_version"]),
                        expected=expected_param(params))


def expected_param(params: dict) -> tuple[int, ...] | None:
    """The ``edgeship_expected`` request parameter: an int or a list of ints (one per sample;
    gRPC's parameters hold one int64). Raises V2Error(400)."""
    v = params.get("edgeship_expected")
    if v is None:
        return None
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
        raise V2Error(400, "request parameter \"edgeship_expected\" must be a class index or a list of them")
    return tuple(vals)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    if header_length is None:
        return body, None
    try:
        n = int(header_length)
    except ValueError:
        raise V2Error(400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise V2Error(400, f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def _load_header(head: bytes, *, binary_expected: bool) -> dict:
    try:
        req = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        hint = "" if binary_expected else _BINARY_HINT
        raise V2Error(400, f"request body is not valid JSON: {e}{hint}") from e
    except RecursionError:
        raise V2Error(400, "request body is nested too deeply to read as JSON") from None
    if not isinstance(req, dict):
        raise V2Error(400, "request body must be a JSON object with an \"inputs\" list")
    return req


def _check_names(req: dict, model: str | None, version: str | None) -> None:
    name, ver = req.get("model_name"), req.get("model_version")
    if name is not None and model is not None and name != model:
        raise V2Error(400, f"\"model_name\" {name!r} differs from the model in the path, {model!r}")
    if ver not in (None, "") and version is not None and str(ver) != version:
        raise V2Error(400, f"\"model_version\" {ver!r} differs from the version in the path, {version!r}")


def _params(p: Any, where: str) -> dict:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise V2Error(400, f"{where} \"parameters\" must be an object")
    return p


def _flag(params: dict, key: str, where: str) -> bool:
    v = params.get(key, False)
    if not isinstance(v, bool):
        raise V2Error(400, f"{where} parameter {key!r} must be true or false, got {v!r}")
    return v


class _Chunks:
    """The binary part of a request, handed out in input order."""

    def __init__(self, data: memoryview | None) -> None:
        self.data, self.pos = data, 0

    def take(self, n: Any, name: str) -> memoryview:
        if self.data is None:
            raise V2Error(400, f"input {name!r} has \"binary_data_size\" but the request has no binary part"
                               + _BINARY_HINT)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise V2Error(400, f"input {name!r}: binary_data_size must be a non-negative integer, got {n!r}")
        if self.pos + n > len(self.data):
            raise V2Error(400, f"input {name!r}: binary_data_size {n} but only {len(self.data) - self.pos} "
                               f"bytes of binary data are left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def done(self) -> None:
        if self.data is not None and self.pos != len(self.data):
            raise V2Error(400, f"{len(self.data) - self.pos} bytes of binary data are not claimed by any input's "
                               f"binary_data_size ({self.pos} of {len(self.data)} used)")


def _parse_tensor(t: Any, i: int, specs: Mapping[str, TensorSpec], chunks: _Chunks) -> tuple[str, np.ndarray]:
    if not isinstance(t, dict):
        raise V2Error(400, f"inputs[{i}] must be an object")
    params = _params(t.get("parameters"), f"inputs[{i}]")
    binary = "binary_data_size" in params
    unknown_params = sorted(set(params) - {"binary_data_size"})
    if unknown_params:
        extra = " (the shared memory extensions are not supported)" if any("shared_memory" in p for p in
                                                                         unknown_params) else ""
        raise V2Error(400, f"inputs[{i}]: unknown parameter(s) {unknown_params}{extra}")
    unknown = sorted(set(t) - _INPUT_KEYS)
    missing = sorted({"name", "shape", "datatype"} - set(t)) + ([] if binary or "data" in t else ["data"])
    if unknown or missing:
        raise V2Error(400, f"inputs[{i}]: " + (f"unknown key(s) {unknown} " if unknown else "")
                      + (f"missing key(s) {missing}" if missing else ""))
    name = t["name"]
    if name not in specs:
        raise V2Error(400, f"unknown input {name!r}; the model takes {sorted(specs)}")
    if binary and "data" in t:
        raise V2Error(400, f"input {name!r} has both \"data\" and \"binary_data_size\"; send one")
    spec, dt, shape = specs[name], t["datatype"], t["shape"]
    check_header(spec, dt, shape)
    if binary:
        arr = from_raw(chunks.take(params["binary_data_size"], name), name=name, datatype=dt, shape=shape)
    else:
        arr = from_json(t["data"], name=name, datatype=dt, shape=shape)
    return name, arr


def check_header(spec: TensorSpec, datatype: Any, shape: Any) -> None:
    """Datatype and shape of an input against the model's. Raises V2Error(400)."""
    name = spec.name
    if datatype != v2_datatype(spec.dtype):
        if datatype not in V2_TO_NP:
            raise V2Error(400, f"input {name!r}: datatype {datatype!r} is not supported; use one of "
                               f"{sorted(V2_TO_NP)}")
        raise V2Error(400, f"input {name!r}: datatype {datatype} but the model takes {v2_datatype(spec.dtype)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise V2Error(400, f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if not spec.accepts_shape(tuple(shape)):
        raise V2Error(400, f"input {name!r}: shape {shape} does not fit the model's {v2_shape(spec)}")


def _requested_outputs(outputs: Any) -> tuple[RequestedOutput, ...] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise V2Error(400, "\"outputs\" must be a list of objects with a \"name\"")
    out = []
    for o in outputs:
        unknown = sorted(set(o) - _OUTPUT_KEYS)
        params = _params(o.get("parameters"), f"output {o['name']!r}")
        bad = sorted(set(params) - {"binary_data", "classification"})
        if unknown or bad:
            raise V2Error(400, f"output {o['name']!r}: unknown " + (f"key(s) {unknown}" if unknown else
                                                                   f"parameter(s) {bad}")
                          + "; allowed parameters: binary_data, classification")
        k = params.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise V2Error(400, f"output {o['name']!r}: classification must be a class count, got {k!r}")
        binary = _flag(params, "binary_data", f"output {o['name']!r}") if "binary_data" in params else None
        out.append(RequestedOutput(o["name"], binary, k))
    return tuple(out)


# ------------------------------------------------------------------------ response
def response_outputs(outputs: Mapping[str, np.ndarray],
                     requested: tuple[RequestedOutput, ...] | None) -> list[tuple[RequestedOutput, np.ndarray]]:
    """The outputs to answer, in order, classification applied. Raises V2Error(400) for an
    output the model does not give."""
    wanted = requested if requested is not None else tuple(RequestedOutput(n) for n in outputs)
    unknown = [o.name for o in wanted if o.name not in outputs]
    if unknown:
        raise V2Error(400, f"unknown output(s) {unknown}; the model gives {sorted(outputs)}")
    return [(o, classify(outputs[o.name], o.class_count, name=o.name) if o.class_count else outputs[o.name])
            for o in wanted]


def infer_response(*, model_name: str, model_version: str, outputs: Mapping[str, np.ndarray],
                   request: InferRequest) -> tuple[dict[str, Any], list[bytes]]:
    """The response header and the binary chunks (in output order) of the binary outputs.

    Raises:
        V2Error(400): a requested output the model lacks, or a classification it cannot take.
    """
    entries, chunks = [], []
    for o, arr in response_outputs(outputs, request.outputs):
        entry: dict[str, Any] = {"name": o.name, "datatype": v2_datatype(arr.dtype.name),
                                 "shape": list(arr.shape)}
        if (o.binary if o.binary is not None else request.binary_output):
            raw = to_raw(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(arr)
        entries.append(entry)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request.request_id is not None:
        resp["id"] = request.request_id
    return resp, chunks
