"""The host/device contracts that have no engine in them: signed release facts, the state
directory layout, the local control API's records. (The bundle schema is tested in
tests/agent/test_bundle.py, the MQTT catalogue in tests/mqtt/test_queue_payloads.py.)"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from runtime.contracts.bundle import (
    ORT_MAX_OPSET, BundleInfo, FileEntry, Precision, Requirements, Source, Tolerances, onnxruntime_max_opset,
)
from runtime.contracts.control import AgentInfo
from runtime.contracts.release import CUSTOM_KEY, FACT_FIELDS, ReleaseFacts
from runtime.contracts.statedir import InstallLayout, QueueDir, StateDir
from runtime.spec import Engine, TensorSpec


def _info(**over) -> BundleInfo:
    d = dict(
        name="m", version="1.2.0", release=3, engine=Engine.ONNXRUNTIME, precision=Precision.FP32,
        model_file="model.onnx", inputs=(TensorSpec("x", "float32", ("batch", 4)),),
        outputs=(TensorSpec("y", "float32", ("batch", 4)),),
        requirements=Requirements(engine=Engine.ONNXRUNTIME, min_engine_version="1.17.0", arch=("x86_64",), opset=17),
        latency_budget_ms=5.0, tolerances=Tolerances(atol=1e-3, min_cosine=0.999), golden_calls=1,
        input_stats={}, output_stats={},
        files=(FileEntry("golden.npz", "0" * 64, 1), FileEntry("model/model.onnx", "1" * 64, 2)),
        source=Source(build_manifest_sha256="2" * 64, artifact_id="onnxruntime-fp32"))
    d.update(over)
    return BundleInfo(**d)


def test_release_facts_are_the_signed_fields_and_round_trip_through_custom_metadata():
    info = _info()
    facts = ReleaseFacts.of(info)
    assert tuple(facts.fields) == FACT_FIELDS
    assert "latency_budget_ms" not in facts.fields and "tolerances" not in facts.fields  # floats: not in TUF
    custom = json.loads(json.dumps({"custom": facts.custom_metadata()}))  # as tuf stores it
    back = ReleaseFacts.from_target(custom)
    assert back == facts and back.name == "m" and back.release == 3 and back.version == "1.2.0"
    assert back.mismatches(info) == []
    assert ReleaseFacts.from_target({}) is None
    assert ReleaseFacts.from_target({"custom": {"other-tool": {"name": "m"}}}) is None
    assert ReleaseFacts.from_target({"custom": {CUSTOM_KEY: {"release": 3}}}) is None  # no model name


@pytest.mark.parametrize("field,other", [
    ("name", {"name": "n"}), ("version", {"version": "1.3.0"}), ("release", {"release": 4}),
    ("precision", {"precision": Precision.FP16}),
    ("io", {"inputs": (TensorSpec("z", "float32", ("batch", 4)),)}),
    ("requirements", {"requirements": Requirements(engine=Engine.ONNXRUNTIME, min_engine_version="1.18.0",
                                                   arch=("x86_64",), opset=17)}),
])
def test_a_bundle_that_contradicts_its_signed_facts_is_named(field, other):
    signed = ReleaseFacts.of(_info())
    assert signed.mismatches(_info(**other)) == [field]


def test_facts_a_target_does_not_carry_are_not_compared():
    old_publisher = ReleaseFacts({k: v for k, v in ReleaseFacts.of(_info()).fields.items() if k != "io"})
    assert old_publisher.mismatches(_info(inputs=(TensorSpec("z", "float32", ("batch", 4)),))) == []
    tampered = copy.deepcopy(dict(ReleaseFacts.of(_info()).fields))
    tampered["schema_version"] = 1
    assert ReleaseFacts(tampered).mismatches(_info()) == ["schema_version"]


def test_the_state_dir_layout_is_spelled_once():
    p = StateDir.at("/s")
    rel = {k: str(getattr(p, k).relative_to("/s")) for k in (
        "models", "pointers", "tmp", "store_lock", "agent_lock", "agent_info", "control_token", "trust_root",
        "update", "journal", "trusted_time", "tuf_metadata", "downloads", "partial_downloads", "telemetry")}
    assert rel == {
        "models": "models", "pointers": "pointers.json", "tmp": "tmp", "store_lock": "store.lock",
        "agent_lock": "agent.lock", "agent_info": "agent.json", "control_token": "control.token",
        "trust_root": "trust/root.json", "update": "update", "journal": "update/journal.json",
        "trusted_time": "update/trusted_time.json", "tuf_metadata": "update/metadata",
        "downloads": "update/downloads", "partial_downloads": "update/downloads/partial", "telemetry": "telemetry"}
    assert p.model("ab" * 32) == Path("/s/models") / ("ab" * 32)
    assert p.download("cd" * 32) == Path("/s/update/downloads") / f"{'cd' * 32}.tar"
    q = QueueDir(p.telemetry)
    assert (q.queue.name, q.control_state.name) == ("queue.sqlite", "control.json")
    lay = InstallLayout.under("/p")
    assert (str(lay.config), str(lay.state_dir), str(lay.unit)) == (
        "/p/etc/edgeship/agent.toml", "/p/var/lib/edgeship", "/p/etc/systemd/system/edgeship-agent.service")


def test_agent_info_url_reaches_a_wildcard_listener_on_loopback():
    assert AgentInfo.from_json({"pid": 1, "host": "0.0.0.0", "port": 80}).url == "http://127.0.0.1:80"
    assert AgentInfo(1, "::", 81).url == "http://[::1]:81"
    assert AgentInfo(1, "10.0.0.2", 82).to_json() == {"pid": 1, "host": "10.0.0.2", "port": 82}
    with pytest.raises(KeyError):
        AgentInfo.from_json({"pid": 1})


def test_onnxruntime_opset_table():
    assert onnxruntime_max_opset("1.17.3") == 20
    assert onnxruntime_max_opset("9.0.0") == max(ORT_MAX_OPSET.values())  # newer than the table
    assert onnxruntime_max_opset("1.2.0") is None and onnxruntime_max_opset(None) is None
