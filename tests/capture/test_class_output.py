"""The class output of a multi-output model (MTCNN ONet-like: a regression head first, a softmax
head last), decided once at package time: the drift baseline's class mix, the output a capture
rule without ``output`` judges (package-time check, `bundle inspect`, the agent) and
`edgeship data inspect`'s class mix; ``edgeship package --class-output`` overrides it."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from runtime.contracts.bundle import read_bundle_info
from runtime.contracts.capture import fileformat as ff
from runtime.contracts.capture.rules import CaptureRule, Trigger
from runtime.spec import TensorSpec
from toolchain.cli import main

FACTORY = '''
import torch
import torch.nn as nn


class ThreeHeads(nn.Module):
    """bbox_regression [b, 4] (large values: its softmax is near one-hot), landmarks [b, 10],
    face_probability [b, 2] (a softmax of small logits: top-1 near 0.5)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(8, 16)
        self.bbox, self.marks, self.face = nn.Linear(16, 4), nn.Linear(16, 10), nn.Linear(16, 2)
        with torch.no_grad():
            self.bbox.weight.mul_(200.0)
            self.face.weight.mul_(0.01)

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        return self.bbox(h), self.marks(h), torch.softmax(self.face(h), dim=1)


def build():
    torch.manual_seed(0)
    return ThreeHeads().eval(), (torch.randn(1, 8),), {
        "input_names": ["x"], "output_names": ["bbox_regression", "landmarks", "face_probability"],
        "dynamic_axes": {"x": {0: "batch"}}}
'''
RULES = '[[rules]]\nname = "unsure"\ntrigger = "low_confidence"\nthreshold = 0.9\n'
PACKAGE = ["--artifact", "onnxruntime-fp32", "--version", "1.0.0", "--release", "1", "--golden-samples", "2"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """The three-head model compiled by `edgeship compile --task classify` on 128 validation
    samples: the regression heads are verified by their error, only the softmax by top-1."""
    work = tmp_path_factory.mktemp("threeheads")
    (work / "threeheads.py").write_text(FACTORY)
    np.savez(work / "val.npz", x=np.random.default_rng(0).standard_normal((128, 8)).astype(np.float32))
    code = main(["compile", f"{work / 'threeheads.py'}:build", "--name", "tiny", "--targets", "onnxruntime",
                 "--precisions", "fp32", "--task", "classify", "--validation", str(work / "val.npz"),
                 "--out", str(work / "build"), "--quiet"])
    assert code == 0
    build = work / "build" / "tiny"
    per = json.loads((build / "manifest.json").read_text())["artifacts"][0]["verification"]["fidelity"]["per_output"]
    assert {n: (o["task"], o["metric"]) for n, o in per.items()} == {
        "bbox_regression": ("regress", "rel_max_abs"), "landmarks": ("regress", "rel_max_abs"),
        "face_probability": ("classify", "top1_agreement")}
    (work / "rules.toml").write_text(RULES)
    return build


@pytest.fixture(scope="module")
def bundle(build, tmp_path_factory):
    from toolchain.package import package_build

    return package_build(build, artifact_id="onnxruntime-fp32", version="1.0.0", release=1, golden_samples=2,
                         out_dir=tmp_path_factory.mktemp("threeheads-out"), capture_rules=build.parent.parent /
                         "rules.toml")


def test_the_softmax_head_is_the_class_output_of_drift_and_rules(bundle, capsys):
    info = read_bundle_info(bundle.path)
    assert info.drift.classes.output == info.class_output == "face_probability"
    assert info.capture.rules[0].output == ""  # the bundle format is unchanged: the rule stays defaulted
    assert main(["bundle", "inspect", str(bundle.path)]) == 0
    text = capsys.readouterr().out
    assert "+ class mix of 'face_probability'" in text
    assert "unsure: low_confidence top-1 < 0.9 on 'face_probability' (the bundle's class output)" in text


def test_class_output_override_and_its_refusal(build, tmp_path, capsys):
    from toolchain.errors import BadInputError
    from toolchain.package import _check_class_output

    code, out, err = _run(capsys, "package", str(build), *PACKAGE, "--out", str(tmp_path / "a"),
                          "--class-output", "landmarks", "--json")
    assert code == 0, err
    assert json.loads(out)["model"]["drift"]["classes"]["output"] == "landmarks"
    code, out, err = _run(capsys, "package", str(build), *PACKAGE, "--out", str(tmp_path / "b"),
                          "--class-output", "faces")
    assert code == 2 and "--class-output 'faces' is not an output of the model" in err, err
    assert "(outputs: bbox_regression float32[batch, 4], landmarks float32[batch, 10], face_probability " in err
    assert not (tmp_path / "b").exists()
    outputs = (TensorSpec("score", "float32", ("batch", 1)), TensorSpec("label", "int64", ("batch", 2)),
               TensorSpec("map", "float32", ("batch", 3, 4)), TensorSpec("p", "float16", ("batch", "classes")))
    for name, needle in [("score", "is float32[batch, 1]"), ("label", "is int64[batch, 2]"),
                         ("map", "is float32[batch, 3, 4]")]:
        with pytest.raises(BadInputError, match="must be a float \\[samples, classes\\] output") as e:
            _check_class_output(name, outputs)
        assert f"--class-output {name!r} {needle}" in str(e.value)
    _check_class_output("p", outputs)  # a dynamic class axis is accepted


def test_policy_fired_reads_the_bundle_class_output_for_a_defaulted_rule():
    from device_agent.capture.policy import fired

    rule = CaptureRule(name="unsure", trigger=Trigger.LOW_CONFIDENCE, threshold=0.9, rate=1.0)
    outputs = {"bbox_regression": np.array([[90.0, -40.0, 3.0, 7.0]], np.float32),  # softmax top-1 ~ 1
               "face_probability": np.array([[0.55, 0.45]], np.float32)}
    assert fired([rule], outputs, None, [0.0]) == []  # no class output: the first output, confident
    [(r, score)] = fired([rule], outputs, None, [0.0], class_output="face_probability")
    assert r is rule and score == pytest.approx(0.55)
    explicit = CaptureRule(name="box", trigger=Trigger.LOW_CONFIDENCE, threshold=0.9, rate=1.0,
                           output="bbox_regression")
    assert fired([explicit], outputs, None, [0.0], class_output="face_probability") == []  # its own output wins


def test_a_real_agent_judges_the_class_output_for_a_defaulted_rule(capture_agent, bundle):
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    agent = capture_agent("[capture]\nenabled = true\n", device="threeheads", bundle=bundle.path)
    with httpx.Client(timeout=10) as c:
        outs = {o["name"]: np.asarray(o["data"], np.float64).reshape(o["shape"]) for o in agent.infer(c, x)["outputs"]}
    face, box = outs["face_probability"], outs["bbox_regression"]
    z = np.exp(box - box.max(axis=1, keepdims=True))
    assert (z / z.sum(axis=1, keepdims=True)).max(axis=1).min() > 0.9  # the first output would not fire
    assert face.max(axis=1).min() < 0.9
    deadline = time.monotonic() + 20
    while not (agent.state / "capture" / ff.INDEX).is_file() or not ff.read_index(agent.state / "capture").entries:
        assert time.monotonic() < deadline, (agent.tmp / "agent.log").read_text()[-2000:]
        time.sleep(0.1)
    [entry] = ff.read_index(agent.state / "capture").entries
    assert (entry.meta.rule, entry.meta.trigger) == ("unsure", "low_confidence")
    assert entry.meta.score == pytest.approx(face.max(axis=1).min(), abs=1e-5)


def test_data_inspect_class_mix_is_of_the_class_output(bundle, tmp_path, capsys):
    from toolchain.data import captures

    w = captures.SetWriter(tmp_path / "set")
    rng = np.random.default_rng(5)
    for i in range(3):
        outputs = {"bbox_regression": rng.standard_normal((2, 4)).astype(np.float32),
                   "landmarks": rng.standard_normal((2, 10)).astype(np.float32),
                   "face_probability": np.array([[0.2, 0.8], [0.3, 0.7]], np.float32)}
        meta = ff.CaptureMeta(id=f"{1_700_000_000_000 + i}-{i:04x}", ts_ms=1_700_000_000_000 + i, fleet="lab",
                              device="cam", model={"name": "tiny", "version": "1.0.0", "release": 1,
                                                   "sha256": bundle.sha256}, rule="s", trigger="sample", rules=("s",),
                              samples=2, inputs=("x",), outputs=tuple(outputs), labels=False, layout="batch")
        w.add(ff.Capture(meta=meta, inputs={"x": rng.standard_normal((2, 8)).astype(np.float32)}, outputs=outputs,
                         labels=None), subdir="cam")
    w.commit()
    for extra in (["--bundle", str(bundle.path)], []):  # the bundle's class output; without: by its name
        code, out, err = _run(capsys, "data", "inspect", str(tmp_path / "set"), *extra, "--json")
        assert code == 0, err
        rep = json.loads(out)
        assert rep["class_output"] == "face_probability"
        assert rep["groups"][-1]["predicted_class_mix"] == {"1": 1.0}


NO_BASELINE = '''
import torch
import torch.nn as nn


class TwoHeads(nn.Module):
    """bbox_regression [b, 4] first (large values), face_probability [b, 2] (a softmax, top-1 near 0.5)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(8, 16)
        self.bbox, self.face = nn.Linear(16, 4), nn.Linear(16, 2)
        with torch.no_grad():
            self.bbox.weight.mul_(200.0)
            self.face.weight.mul_(0.01)

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        return self.bbox(h), torch.softmax(self.face(h), dim=1)


class NoClass(nn.Module):
    """embedding [b, 16] first (a float [samples, 16] tensor, not class scores), value [b, 1]."""

    def __init__(self):
        super().__init__()
        self.embed, self.value = nn.Linear(8, 16), nn.Linear(8, 1)

    def forward(self, x):
        return self.embed(x), self.value(x)


def _build(model, names):
    torch.manual_seed(0)
    return model.eval(), (torch.randn(1, 8),), {"input_names": ["x"], "output_names": names,
                                                 "dynamic_axes": {"x": {0: "batch"}}}


def two_heads():
    return _build(TwoHeads(), ["bbox_regression", "face_probability"])


def no_class():
    return _build(NoClass(), ["embedding", "value"])
'''


@pytest.fixture(scope="module")
def small_builds(tmp_path_factory):
    """Both models compiled without --validation (32 random samples: too few for a drift baseline)."""
    work = tmp_path_factory.mktemp("nobaseline")
    (work / "heads.py").write_text(NO_BASELINE)
    (work / "rules.toml").write_text(RULES)
    builds = {}
    # the model task is its first non-regression head's: the box head is judged as a regression
    for fn, tasks in [("two_heads", {"bbox_regression": "regress", "face_probability": "classify"}),
                      ("no_class", {"embedding": "embed", "value": "regress"})]:
        assert main(["compile", f"{work / 'heads.py'}:{fn}", "--name", "tiny", "--targets", "onnxruntime",
                     "--precisions", "fp32", "--out", str(work / fn), "--quiet"]) == 0
        build = work / fn / "tiny"
        per = json.loads((build / "manifest.json").read_text())["artifacts"][0]["verification"]["fidelity"]
        assert {n: o["task"] for n, o in per["per_output"].items()} == tasks  # what the build verified
        builds[fn] = build
    return work, builds


def test_without_a_baseline_a_defaulted_rule_gets_the_class_output_not_the_first(small_builds, tmp_path, capsys):
    from device_agent.capture.policy import fired

    work, builds = small_builds
    code, out, err = _run(capsys, "package", str(builds["two_heads"]), *PACKAGE, "--out", str(tmp_path / "a"),
                          "--capture-rules", str(work / "rules.toml"), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["model"]["drift"] is None  # 32 samples: no baseline to carry the class output
    assert res["model"]["capture"]["rules"][0]["output"] == "face_probability"  # written into the rule instead
    info = read_bundle_info(res["path"])
    assert main(["bundle", "inspect", res["path"]]) == 0
    assert "unsure: low_confidence top-1 < 0.9 on 'face_probability'," in capsys.readouterr().out
    outputs = {"bbox_regression": np.array([[90.0, -40.0, 3.0, 7.0]], np.float32),  # confident if judged
               "face_probability": np.array([[0.55, 0.45]], np.float32)}
    [(rule, score)] = fired(info.capture.rules, outputs, None, [0.0], class_output=info.class_output)
    assert rule.name == "unsure" and score == pytest.approx(0.55)
    code, out, err = _run(capsys, "package", str(builds["two_heads"]), *PACKAGE, "--out", str(tmp_path / "b"),
                          "--capture-rules", str(work / "rules.toml"), "--class-output", "bbox_regression", "--json")
    assert code == 0, err  # --class-output decides it without a baseline too
    assert json.loads(out)["model"]["capture"]["rules"][0]["output"] == "bbox_regression"


def test_a_class_rule_on_a_model_without_a_class_output_is_refused_at_package_time(small_builds, tmp_path, capsys):
    work, builds = small_builds
    code, out, err = _run(capsys, "package", str(builds["no_class"]), *PACKAGE, "--out", str(tmp_path / "a"),
                          "--capture-rules", str(work / "rules.toml"))
    assert code == 2, (out, err)
    assert "capture rule 'unsure' (low_confidence) has no output and the model has no class output" in err, err
    assert "the first output 'embedding' (float32[batch, 16]) is not taken in its place" in err, err
    assert "(outputs: embedding float32[batch, 16], value float32[batch, 1])" in err
    assert "--class-output NAME" in err and not (tmp_path / "a").exists()
    code, out, err = _run(capsys, "package", str(builds["no_class"]), *PACKAGE, "--out", str(tmp_path / "b"),
                          "--json")
    assert code == 0, err  # without class rules the model packages as before
