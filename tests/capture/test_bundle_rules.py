"""Capture rules per release (issue 16): `edgeship package --capture-rules` writes them into
model.json ``capture`` (schema 3), strictly checked at package time and when read; a real
agent applies them with ``[capture] enabled`` and no rules of its own, drops them with
``use_bundle_rules = false``, and a rule of its own with the same name wins."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from runtime.contracts.bundle import BundleError, BundleInfo, read_bundle_info
from runtime.contracts.capture import fileformat as ff
from runtime.contracts.capture.rules import CapturePolicy, CaptureRule, Trigger
from toolchain.cli import main

RULES = """
[[rules]]
name = "keep"
trigger = "sample"
rate = 1.0

[[rules]]
name = "unsure"
trigger = "low_confidence"
threshold = 0.6
output = "y"
max_bytes = 1048576
priority = 2
"""
PACKAGE = ["--artifact", "onnxruntime-fp32", "--version", "1.0.0", "--release", "1"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from toolchain.demo_ota import make_tiny_build

    return make_tiny_build(tmp_path_factory.mktemp("rules-build") / "b")


@pytest.fixture(scope="module")
def ruled(build, tmp_path_factory):
    from toolchain.package import package_build

    work = tmp_path_factory.mktemp("rules-bundle")
    (work / "rules.toml").write_text(RULES)
    return package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=work / "out",
                         golden_samples=2, capture_rules=work / "rules.toml")


def _package(capsys, build: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["package", str(build), *PACKAGE, "--out", str(out), *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ------------------------------------------------------------------ the model.json section
def test_capture_section_round_trips_and_is_strict(ruled):
    info = read_bundle_info(ruled.path)
    assert info.schema_version == 3 and info == ruled.info
    keep, unsure = info.capture.rules
    assert keep == CaptureRule(name="keep", trigger=Trigger.SAMPLE, rate=1.0)  # the rest: the agent's defaults
    assert (unsure.trigger, unsure.threshold, unsure.output, unsure.max_bytes, unsure.priority) == (
        Trigger.LOW_CONFIDENCE, 0.6, "y", 1 << 20, 2)
    d = json.loads(info.to_bytes())
    assert BundleInfo.from_json(d) == info
    for mutate, needle in [
        (lambda d: d["capture"]["rules"][0].update(colour="red"), "capture.rules[0]: unknown key(s) ['colour']"),
        (lambda d: d["capture"]["rules"][1].pop("threshold"), "capture.rules[1]: missing key(s) ['threshold']"),
        (lambda d: d["capture"]["rules"][0].update(rate=2.0), "capture.rules[0]: rate 2.0 must be in [0, 1]"),
        (lambda d: d["capture"]["rules"][1].update(name="keep"), "duplicate rule name(s) ['keep']"),
        (lambda d: d["capture"]["rules"][1].update(output="logits"), "output 'logits' is not an output"),
        (lambda d: d["capture"].update(extra=[]), "capture: unknown key(s) ['extra']"),
        (lambda d: d.pop("capture"), "missing key(s) ['capture']"),
        (lambda d: d.update(schema_version=2), "unknown key(s) ['capture']"),  # schema 2 has no capture section
    ]:
        bad = copy.deepcopy(d)
        mutate(bad)
        with pytest.raises(BundleError) as e:
            BundleInfo.from_json(bad)
        assert needle in str(e.value), (needle, str(e.value))
    assert BundleInfo.from_json({**d, "capture": None}).capture is None  # schema 3 without rules: null
    with pytest.raises(BundleError, match="capture rules need schema 3"):
        dataclasses.replace(info, schema_version=2).to_json()  # never written where it would be dropped


def test_a_bundle_without_rules_stays_schema_2_for_older_agents(build, ruled, tmp_path, monkeypatch):
    from runtime.contracts.bundle import schema
    from toolchain.package import package_build

    plain = package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=tmp_path,
                          golden_samples=2)
    assert plain.info.schema_version == 2 and plain.info.capture is None
    assert "capture" not in json.loads(plain.info.to_bytes())
    monkeypatch.setattr(schema, "READABLE_SCHEMA_VERSIONS", (1, 2))  # an agent from before schema 3
    assert read_bundle_info(plain.path) == plain.info
    with pytest.raises(BundleError, match="schema_version: 3 is not supported .* upgrade edgeship"):
        read_bundle_info(ruled.path)


def test_the_rules_are_covered_by_the_bundle_hash(ruled, tmp_path):
    """model.json (with its rules) is a member of the tar whose sha256 names, and signs, the bundle."""
    import tarfile

    from runtime.fsutil import sha256_file
    from toolchain.package import _write_tar

    with tarfile.open(ruled.path) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    d = json.loads(members["model.json"])
    d["capture"]["rules"][0]["rate"] = 0.5
    edited = BundleInfo.from_json(d)
    members["model.json"] = edited.to_bytes()
    path, sha = _write_tar(tmp_path, edited, members)
    assert sha == sha256_file(path) != ruled.sha256


# ------------------------------------------------------------------ package time
def _two_output_build(root: Path) -> Path:
    """A build whose model answers a float [batch, 1] score and an int64 [batch] label: no class scores."""
    import onnx
    from onnx import TensorProto, helper

    from toolchain.demo_ota import write_ort_fp32_manifest

    nodes = [helper.make_node("ReduceSum", ["x"], ["score"], keepdims=1, axes=[1]),
             helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)]
    g = helper.make_graph(nodes, "twohead", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1]),
                           helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 8
    for sub in ("reference", "onnxruntime-fp32", "data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    onnx.save(m, root / "reference" / "model.onnx")
    onnx.save(m, root / "onnxruntime-fp32" / "model.onnx")
    np.savez(root / "data" / "validation.npz", x=np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
          "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch", 1]},
                      {"name": "label", "dtype": "int64", "shape": ["batch"]}]}
    write_ort_fp32_manifest(root, name="twohead", source="test", io=io, samples=8)
    return root


BAD_FILES = {
    "unknown key": ('[[rules]]\nname = "s"\ntrigger = "sample"\nrat = 1.0\n',
                    ["rule 's'", "unknown key(s) ['rat'] (did you mean 'rate'?); valid keys: ['drift_samples', "]),
    "bad value": ('[[rules]]\nname = "s"\nrate = 1.5\n', ["rule 's'", "rate 1.5 must be in [0, 1]"]),
    "wrong type": ('[[rules]]\nname = "s"\nmax_count = "many"\n', ["rule 's'", "max_count: expected an integer"]),
    "bad trigger": ('[[rules]]\nname = "s"\ntrigger = "often"\n', ["rule 's'", "trigger: 'often' is not one of"]),
    "no name": ('[[rules]]\ntrigger = "sample"\n', ["rule #1 (no name)", "rules[0].name: expected a non-empty string"]),
    "duplicate": ('[[rules]]\nname = "s"\n[[rules]]\nname = "s"\ntrigger = "error"\n', ["duplicate rule name(s) ['s']"]),
    "agent.toml form": ('[capture]\nenabled = true\n[[capture.rules]]\nname = "s"\n',
                        ["unexpected ['capture']", "only [[rules]] tables"]),
    "empty": ("", ["no [[rules]] tables"]),
    "not toml": ("[[rules\n", ["not valid TOML"]),
    "not an output": ('[[rules]]\nname = "unsure"\ntrigger = "low_confidence"\noutput = "logits"\n',
                      ["capture rule 'unsure' (low_confidence): output 'logits' is not an output of the model",
                       "outputs: y float32[batch, 3]"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_package_refuses_a_bad_rules_file_naming_file_rule_and_key(case, build, tmp_path, capsys):
    text, needles = BAD_FILES[case]
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    code, out, err = _package(capsys, build, tmp_path / "out", "--capture-rules", str(rules))
    assert code == 2, (out, err)
    assert f"{rules}: " in err and all(n in err for n in needles), err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # no bundle written


def test_package_refuses_class_rules_on_a_model_without_class_scores(tmp_path, capsys):
    build = _two_output_build(tmp_path / "b")
    for rule, needle in [
        ('name = "unsure"\ntrigger = "low_confidence"',
         "capture rule 'unsure' (low_confidence) has no output and the model has no class output: no output the "
         "build verified as a classifier's is a float [samples, classes] tensor, and the first output 'score' "
         "(float32[batch, 1]) is not taken in its place"),
        ('name = "wrong"\ntrigger = "disagreement"\noutput = "label"',
         "capture rule 'wrong' (disagreement) needs a float class-score output [..., classes]; output 'label' is "
         "int64[batch]"),
    ]:
        (tmp_path / "r.toml").write_text(f"[[rules]]\n{rule}\n")
        code, _out, err = _package(capsys, build, tmp_path / "out", "--capture-rules", str(tmp_path / "r.toml"))
        assert code == 2 and needle in err and "(outputs: score float32[batch, 1], label int64[batch])" in err, err
    assert not (tmp_path / "out").exists()
    (tmp_path / "r.json").write_text(json.dumps({"rules": [{"name": "s", "trigger": "error"}]}))  # JSON, no class
    code, out, err = _package(capsys, build, tmp_path / "out", "--capture-rules", str(tmp_path / "r.json"), "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)["capture_rules"]] == ["s"]


def test_package_and_bundle_inspect_list_the_rules(build, ruled, tmp_path, capsys):
    (tmp_path / "rules.toml").write_text(RULES)
    code, out, err = _package(capsys, build, tmp_path / "out", "--capture-rules", str(tmp_path / "rules.toml"),
                              "--golden-samples", "2", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["sha256"] == ruled.sha256  # deterministic: the same rules, the same bundle
    assert [r["name"] for r in res["capture_rules"]] == ["keep", "unsure"] == \
        [r["name"] for r in res["model"]["capture"]["rules"]]
    assert [r["rate"] for r in res["model"]["capture"]["rules"]] == [1.0, 1.0]  # unsure's left out: 1.0, written
    assert main(["bundle", "inspect", str(ruled.path)]) == 0
    text = capsys.readouterr().out
    assert "model.json schema 3" in text and "capture  2 rule(s)" in text
    assert "keep: sample, rate 1, <= 1000 captures / 64.0 MiB, kept 7 d, priority 0" in text
    # rate left out: 1 for a low_confidence rule (every unsure call), written explicitly into model.json
    assert "unsure: low_confidence top-1 < 0.6 on 'y', rate 1, <= 1000 captures / 1.0 MiB" in text
    assert main(["bundle", "inspect", str(ruled.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["capture_rules"] == res["capture_rules"]
    plain = tmp_path / "plain"
    assert _package(capsys, build, plain)[0] == 0
    assert main(["bundle", "inspect", str(next(plain.glob("*.tar")))]) == 0
    assert "capture  no rules ship with this release" in capsys.readouterr().out
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    assert main(["bundle", "inspect", str(tmp_path / "junk.tar")]) == 2


# ------------------------------------------------------------------ a real agent
def _captures(agent) -> list[ff.CaptureMeta]:
    root = agent.state / "capture"
    if not (root / ff.INDEX).is_file():
        return []
    return [e.meta for e in ff.read_index(root).entries]


def _wait_for(agent, n: int, timeout_s: float = 20.0) -> list[ff.CaptureMeta]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = _captures(agent)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{len(_captures(agent))} captures listed, waited for {n}; log: "
                         f"{(agent.tmp / 'agent.log').read_text()[-2000:]}")


def _disagree(agent, client, x) -> None:
    """A request whose expected class is not the model's answer (fires a disagreement rule)."""
    y = np.asarray(agent.infer(client, x)["outputs"][0]["data"]).reshape(len(x), -1)
    agent.infer(client, x, expected=[int((c + 1) % y.shape[1]) for c in y.argmax(axis=1)])


MARKER = '[[capture.rules]]\nname = "marker"\ntrigger = "disagreement"\nrate = 1.0\n'


@pytest.fixture(scope="module")
def ruled_sample(tmp_path_factory):
    """The tiny model packaged with one bundle rule: ``keep``, sample at rate 1.0."""
    from toolchain.demo_ota import make_tiny_build
    from toolchain.package import package_build

    work = tmp_path_factory.mktemp("rules-agent")
    build = make_tiny_build(work / "b")
    return package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, out_dir=work / "out",
                         golden_samples=2, capture_rules=CapturePolicy(rules=(
                             CaptureRule(name="keep", trigger=Trigger.SAMPLE, rate=1.0),)))


def test_a_real_agent_applies_the_bundle_rules_unless_told_not_to(capture_agent, ruled_sample):
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    on = capture_agent("[capture]\nenabled = true\n", device="bundle-on", bundle=ruled_sample.path)
    with httpx.Client(timeout=10) as c:
        for _ in range(3):
            on.infer(c, x)
    metas = _wait_for(on, 3)
    assert len(metas) == 3
    assert {(m.rule, m.trigger, m.model["sha256"]) for m in metas} == {("keep", "sample", ruled_sample.sha256)}

    off = capture_agent("[capture]\nenabled = true\nuse_bundle_rules = false\n" + MARKER, device="bundle-off",
                        bundle=ruled_sample.path)
    with httpx.Client(timeout=10) as c:
        for _ in range(3):
            off.infer(c, x)
        _disagree(off, c, x)  # captured by the config's marker, queued after the three plain calls
    metas = _wait_for(off, 1)
    time.sleep(1.0)  # the writer is FIFO: once the marker is listed, nothing of the earlier calls is pending
    assert [m.rule for m in _captures(off)] == ["marker"]


def test_a_config_rule_of_the_same_name_wins_over_the_bundle_rule(capture_agent, ruled_sample):
    x = np.random.default_rng(2).standard_normal((1, 4)).astype(np.float32)
    mine = capture_agent('[capture]\nenabled = true\n[[capture.rules]]\nname = "keep"\ntrigger = "disagreement"\n'
                         'rate = 1.0\n', device="bundle-clash", bundle=ruled_sample.path)
    with httpx.Client(timeout=10) as c:
        for _ in range(2):
            mine.infer(c, x)   # the bundle's "keep" would capture these; the config's does not
        _disagree(mine, c, x)  # one more plain call, then one the config's "keep" captures
    metas = _wait_for(mine, 1)
    time.sleep(1.0)
    metas = _captures(mine)
    assert [(m.rule, m.trigger, m.labels) for m in metas] == [("keep", "disagreement", True)]
