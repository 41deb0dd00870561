"""The RPCs of ``inference.GRPCInferenceService``: protobuf messages <-> the shared service.

Requests are parsed with the same checks as HTTP (:func:`..v2.check_header`, the tensor
decoders of :mod:`..tensors`) and answered from the same :class:`..service.InferenceService`,
so both front ends agree on every error and every figure. Outputs are always answered raw
(``raw_output_contents``), as Triton does; inputs may come raw or as typed ``contents``.

Errors map from the HTTP status (:func:`..errors.error_status`): 400 INVALID_ARGUMENT,
404 NOT_FOUND, 409 FAILED_PRECONDITION, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE,
500 INTERNAL.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc
import numpy as np

from ... import __version__
from ..catalog import EXTENSIONS
from ..errors import V2Error, error_status
from ..service import InferenceService
from ..tensors import from_raw, np_dtype, serialize_bytes, to_raw, v2_datatype
from ..v2 import InferRequest, RequestedOutput, check_header, expected_param, response_outputs
from . import edgeship_oip_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.UNAVAILABLE}
#: typed contents field per datatype (FP16 travels raw only)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_STATEFUL = ("sequence_id", "sequence_start", "sequence_end")


def _param(p: pb.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


class Handlers:
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def ServerLive(self, req, ctx):  # noqa: N802 - the protocol's method names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, req, ctx):  # noqa: N802
        return pb.ServerReadyResponse(ready=self.service.agent.ready)

    def ServerMetadata(self, req, ctx):  # noqa: N802
        return pb.ServerMetadataResponse(name="edgeship-agent", version=__version__, extensions=EXTENSIONS)

    def ModelReady(self, req, ctx):  # noqa: N802
        return pb.ModelReadyResponse(ready=self.service.ready(req.name, req.version or None))

    def ModelMetadata(self, req, ctx):  # noqa: N802
        m = self.service.metadata(req.name, req.version or None)
        return pb.ModelMetadataResponse(
            name=m["name"], versions=m["versions"], platform=m["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in m["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in m["outputs"]])

    def ModelConfig(self, req, ctx):  # noqa: N802
        c = self.service.config(req.name, req.version or None)
        cfg = pb.ModelConfig(
            name=c["name"], platform=c["platform"], backend=c["backend"], max_batch_size=c["max_batch_size"],
            version_policy=pb.ModelVersionPolicy(specific=pb.ModelVersionPolicy.Specific(
                versions=[int(v) for v in c["version_policy"]["specific"]["versions"]])),
            input=[pb.ModelInput(name=t["name"], data_type=t["data_type"], dims=t["dims"]) for t in c["input"]],
            output=[pb.ModelOutput(name=t["name"], data_type=t["data_type"], dims=t["dims"]) for t in c["output"]])
        for k, v in c["parameters"].items():
            cfg.parameters[k].string_value = v["string_value"]
        return pb.ModelConfigResponse(config=cfg)

    def ModelStatistics(self, req, ctx):  # noqa: N802
        stats = self.service.statistics(req.name or None, req.version or None)
        out = pb.ModelStatisticsResponse()
        for s in stats:
            m = out.model_stats.add(name=s["name"], version=s["version"], last_inference=s["last_inference"],
                                    inference_count=s["inference_count"], execution_count=s["execution_count"])
            for k, d in s["inference_stats"].items():
                getattr(m.inference_stats, k).CopyFrom(pb.StatisticDuration(count=d["count"], ns=d["ns"]))
        return out

    def RepositoryIndex(self, req, ctx):  # noqa: N802
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m)
                                                  for m in self.service.index(ready_only=req.ready)])

    def ModelInfer(self, req, ctx):  # noqa: N802
        version = req.model_version or None
        cur = self.service.loaded(req.model_name, version)
        parsed = parse_request(req, cur.session.inputs)
        out, ref = self.service.run(parsed.feeds, req.model_name, expected=parsed.expected)
        resp = pb.ModelInferResponse(model_name=ref.name, model_version=ref.version, id=req.id)
        for o, arr in response_outputs(out, parsed.outputs):
            resp.outputs.add(name=o.name, datatype=v2_datatype(arr.dtype.name), shape=list(arr.shape))
            resp.raw_output_contents.append(to_raw(arr))
        return resp


def parse_request(req: pb.ModelInferRequest, inputs) -> InferRequest:
    """An :class:`InferRequest` from a ModelInferRequest. Raises V2Error(400)."""
    stateful = [k for k in _STATEFUL if k in req.parameters]
    if stateful:
        raise V2Error(400, f"request parameters {stateful}: sequence (stateful) models are not supported")
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise V2Error(400, f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs; give one per input")
    specs = {s.name: s for s in inputs}
    feeds: dict[str, np.ndarray] = {}
    for i, t in enumerate(req.inputs):
        if t.name not in specs:
            raise V2Error(400, f"unknown input {t.name!r}; the model takes {sorted(specs)}")
        if t.name in feeds:
            raise V2Error(400, f"input {t.name!r} is given twice")
        shape = list(t.shape)
        check_header(specs[t.name], t.datatype, shape)
        feeds[t.name] = (from_raw(raw[i], name=t.name, datatype=t.datatype, shape=shape) if raw
                         else _from_contents(t, shape))
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise V2Error(400, f"missing input(s) {missing}; the model takes {sorted(specs)}")
    outputs = None
    if req.outputs:
        outputs = tuple(RequestedOutput(o.name, True, int(_param(o.parameters["classification"]) or 0)
                                        if "classification" in o.parameters else 0) for o in req.outputs)
    expected = (expected_param({"edgeship_expected": _param(req.parameters["edgeship_expected"])})
                if "edgeship_expected" in req.parameters else None)
    return InferRequest(feeds=feeds, outputs=outputs, request_id=req.id or None, binary_output=True,
                        expected=expected)


def _from_contents(t, shape: list[int]) -> np.ndarray:
    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise V2Error(400, f"input {t.name!r}: {t.datatype} data must come in raw_input_contents")
    values = getattr(t.contents, field)
    if t.datatype == "BYTES":
        return from_raw(serialize_bytes(np.array(list(values), dtype=object)), name=t.name, datatype="BYTES",
                        shape=shape)
    arr = np.array(values, dtype=np_dtype(t.datatype, name=t.name))
    if arr.size != int(np.prod(shape)):
        raise V2Error(400, f"input {t.name!r}: {arr.size} values do not fill shape {shape} "
                           f"({int(np.prod(shape))} values)")
    return arr.reshape(shape)


def _guard(name: str, fn: Callable) -> Callable:
    def call(req, ctx):
        try:
            return fn(req, ctx)
        except Exception as e:  # every failure becomes one status; the server keeps going
            status, msg, _ = error_status(e, where=f"grpc {name}")
            ctx.abort(_CODES.get(status, grpc.StatusCode.INTERNAL), msg)
    return call


_RPCS = {"ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
         "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
         "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
         "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
         "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
         "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
         "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
         "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
         "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse)}


def generic_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The service's RPCs under their protocol name (``/inference.GRPCInferenceService/<Rpc>``)."""
    h = Handlers(service)
    return grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(_guard(name, getattr(h, name)),
                                                  request_deserializer=req.FromString,
                                                  response_serializer=resp.SerializeToString)
        for name, (req, resp) in _RPCS.items()})
