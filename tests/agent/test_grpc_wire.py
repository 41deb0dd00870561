"""The agent's own gRPC messages (device_agent/serving/oip_grpc/edgeship_oip.proto) against the
descriptors tritonclient ships: every field the agent defines has the peer's number and type,
so the bytes agree on the wire (package names do not travel)."""

from __future__ import annotations

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[http,grpc] is in the dev extra")

from tritonclient.grpc import model_config_pb2, service_pb2  # noqa: E402

from device_agent.serving.oip_grpc import edgeship_oip_pb2 as ours  # noqa: E402
from device_agent.serving.oip_grpc.handlers import _RPCS, SERVICE  # noqa: E402


def _theirs(name: str):
    for mod in (service_pb2, model_config_pb2):
        if name in mod.DESCRIPTOR.message_types_by_name:
            return mod.DESCRIPTOR.message_types_by_name[name]
    raise AssertionError(f"tritonclient has no message {name}")


def _compare(mine, peer, path: str) -> int:
    checked = 0
    for f in mine.fields:
        other = peer.fields_by_name.get(f.name)
        assert other is not None, f"{path}.{f.name}: not in tritonclient's {peer.full_name}"
        assert (f.number, f.type, f.is_repeated) == (other.number, other.type, other.is_repeated), \
            f"{path}.{f.name}: ours {(f.number, f.type)} vs tritonclient's {(other.number, other.type)}"
        checked += 1
        if f.message_type is not None:
            if f.message_type.GetOptions().map_entry:
                checked += _compare(f.message_type.fields_by_name["value"].message_type or f.message_type,
                                    other.message_type.fields_by_name["value"].message_type or other.message_type,
                                    f"{path}.{f.name}[]")
            else:
                checked += _compare(f.message_type, other.message_type, f"{path}.{f.name}")
        if f.enum_type is not None:
            theirs = {v.name: v.number for v in other.enum_type.values}
            assert {v.name: v.number for v in f.enum_type.values}.items() <= theirs.items(), f"{path}.{f.name}"
    return checked


def test_every_field_matches_tritonclient():
    checked = 0
    for name in ours.DESCRIPTOR.message_types_by_name:
        checked += _compare(ours.DESCRIPTOR.message_types_by_name[name], _theirs(name), name)
    assert checked > 100


def test_every_rpc_is_one_tritonclient_calls_with_those_messages():
    svc = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert SERVICE == svc.full_name
    for rpc, (req, resp) in _RPCS.items():
        m = svc.methods_by_name[rpc]
        assert (m.input_type.name, m.output_type.name) == (req.DESCRIPTOR.name, resp.DESCRIPTOR.name)


def test_the_expected_class_parameter_reaches_the_request_as_over_http():
    """``edgeship_expected`` (capture's disagreement rule) is read from gRPC parameters too;
    a non-integer is refused like over HTTP."""
    import numpy as np

    from device_agent.serving.errors import V2Error
    from device_agent.serving.oip_grpc.handlers import parse_request
    from runtime.spec import TensorSpec

    spec = TensorSpec(name="x", dtype="float32", shape=("N", 2))
    req = ours.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    t.contents.fp32_contents.extend([1.0, 2.0])
    assert parse_request(req, [spec]).expected is None
    req.parameters["edgeship_expected"].int64_param = 3
    parsed = parse_request(req, [spec])
    assert parsed.expected == (3,) and parsed.feeds["x"].dtype == np.float32
    req.parameters["edgeship_expected"].string_param = "three"
    with pytest.raises(V2Error, match="edgeship_expected"):
        parse_request(req, [spec])
